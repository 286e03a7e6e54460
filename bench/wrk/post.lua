-- POST /api/items with a small valid JSON body.
wrk.method = "POST"
wrk.body = '{"name": "bench", "description": "created by the benchmark"}'
wrk.headers["Content-Type"] = "application/json"
