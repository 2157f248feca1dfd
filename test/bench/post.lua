-- wrk: POST the same body and headers the relay sends for one message
wrk.method = "POST"
wrk.body = '{"seq": 1, "order": 1234, "total": 99.5}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["webhook-id"] = "msg_1"
wrk.headers["webhook-timestamp"] = "1700000000"
wrk.headers["outbox-topic"] = "bench.one"
