#!/bin/sh
# devcontainer.json's initializeCommand: runs on the host, in the project's
# root, before compose reads .env. A fresh clone has no .env (git-ignored), so
# make one the way the generator did: .env.example with every `change-me`
# replaced by a random value{% if cookiecutter.use_postgres or cookiecutter.use_redis %}, each URL given the password of its variable{% endif %}.
# An existing .env is left as it is: its passwords may already be in a volume.
set -eu

if [ -f .env ]; then
  exit 0
fi

token() {
  od -An -N24 -tx1 /dev/urandom | tr -d ' \n'
}

umask 077
while IFS= read -r line || [ -n "$line" ]; do
  key=${line%%=*}
  case $line in
{%- if cookiecutter.use_postgres %}
    POSTGRES_PASSWORD=change-me)
      postgres_password=$(token)
      line="$key=$postgres_password"
      ;;
    DATABASE_URL=*:change-me@*)
      line="${line%%:change-me@*}:$postgres_password@${line#*:change-me@}"
      ;;
{%- endif %}
{%- if cookiecutter.use_redis %}
    REDIS_PASSWORD=change-me)
      redis_password=$(token)
      line="$key=$redis_password"
      ;;
    REDIS_URL=*:change-me@*)
      line="${line%%:change-me@*}:$redis_password@${line#*:change-me@}"
      ;;
{%- endif %}
    [A-Z]*=change-me)
      line="$key=$(token)"
      ;;
  esac
  printf '%s\n' "$line"
done <.env.example >.env.new
mv .env.new .env
echo "Made .env from .env.example with new random secrets."
