--
-- PostgreSQL database dump
--

\restrict whr1PuYoCMnXcXjKoqTo5xhUQu3Y5bodsdA9jvcdJpkTg22sqknwyc9ryMEmlyR

-- Dumped from database version 15.20 (Debian 15.20-0+deb12u1)
-- Dumped by pg_dump version 15.20 (Debian 15.20-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: outbox; Type: SCHEMA; Schema: -; Owner: -
--



--
-- Name: outbox; Type: EXTENSION; Schema: -; Owner: -
--

CREATE EXTENSION IF NOT EXISTS outbox WITH SCHEMA outbox VERSION '0.1.0';


--
-- Name: EXTENSION outbox; Type: COMMENT; Schema: -; Owner: -
--

COMMENT ON EXTENSION outbox IS 'transactional outbox with webhook relay, event store with ETags, CQRS projections';


--
-- Name: async_h(outbox.events); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.async_h(e outbox.events) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM FROM public.gate FOR SHARE;  -- lets this script hold the projection back
    INSERT INTO public.async_seen VALUES (e.position, e.stream, e.type);
END $$;


--
-- Name: async_reset(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.async_reset() RETURNS void
    LANGUAGE sql
    AS $$ DELETE FROM public.async_seen $$;


--
-- Name: inline_h(outbox.events); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.inline_h(e outbox.events) RETURNS void
    LANGUAGE sql
    AS $$ INSERT INTO public.inline_seen VALUES (e.stream, e.version, e.type) $$;


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: async_seen; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.async_seen (
    "position" bigint NOT NULL,
    stream text NOT NULL,
    type text NOT NULL
);


--
-- Name: gate; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.gate (
    id integer NOT NULL
);


--
-- Name: inline_seen; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.inline_seen (
    stream text NOT NULL,
    version bigint NOT NULL,
    type text NOT NULL
);


--
-- Data for Name: _endpoints; Type: TABLE DATA; Schema: outbox; Owner: -
--

COPY outbox._endpoints (id, name, url, topics, secret, headers, options, paused, created_at, cursor_id, done_ahead) FROM stdin;
4	later	http://127.0.0.1:OK_PORT/later	{orders.*,billing.*}	whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw	{}	{"ordered": true, "batch_size": 1, "timeout_ms": 10000, "max_attempts": 12, "max_in_flight": 16, "backoff_max_ms": 600000, "backoff_base_ms": 500, "rate_limit_per_sec": 0}	t	2026-12-02 01:27:07.121605+00	0	{}
3	doomed	http://127.0.0.1:BAD_PORT/doomed	{audit.*}	a-raw-secret-of-the-flaky-one	{}	{"ordered": true, "batch_size": 1, "timeout_ms": 10000, "max_attempts": 2, "max_in_flight": 16, "backoff_max_ms": 10, "backoff_base_ms": 10, "rate_limit_per_sec": 0}	f	2026-12-02 01:27:07.10889+00	32	{}
1	main	http://127.0.0.1:OK_PORT/main	{orders.*}	whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw	{"x-env": "fixture"}	{"ordered": true, "batch_size": 1, "timeout_ms": 10000, "max_attempts": 12, "max_in_flight": 16, "backoff_max_ms": 600000, "backoff_base_ms": 500, "rate_limit_per_sec": 0}	f	2026-12-02 01:27:07.069808+00	32	{}
2	flaky	http://127.0.0.1:BAD_PORT/flaky	{billing.*}	a-raw-secret-of-the-flaky-one	{}	{"ordered": true, "batch_size": 1, "timeout_ms": 10000, "max_attempts": 1000, "max_in_flight": 16, "backoff_max_ms": 1000, "backoff_base_ms": 100, "rate_limit_per_sec": 0}	f	2026-12-02 01:27:07.098212+00	32	{}
\.


--
-- Data for Name: _deliveries; Type: TABLE DATA; Schema: outbox; Owner: -
--

COPY outbox._deliveries (endpoint_id, message_id, state, attempts, next_attempt_at, last_status, last_error, updated_at) FROM stdin;
2	23	retry	1	2026-12-02 01:27:07.358055+00	500	HTTP 500: {"ok":false,"status":500}	2026-12-02 01:27:07.294061+00
2	24	retry	0	\N	0		2026-12-02 01:27:07.294061+00
2	25	retry	0	\N	0		2026-12-02 01:27:07.294061+00
2	26	retry	0	\N	0		2026-12-02 01:27:07.294061+00
2	27	retry	0	\N	0		2026-12-02 01:27:07.294061+00
2	28	retry	0	\N	0		2026-12-02 01:27:07.294061+00
2	29	retry	0	\N	0		2026-12-02 01:27:07.294061+00
2	22	retry	2	2026-12-02 01:27:07.405368+00	500	HTTP 500: {"ok":false,"status":500}	2026-12-02 01:27:07.354528+00
3	30	dead	2	\N	500	HTTP 500: {"ok":false,"status":500}	2026-12-02 01:27:07.393445+00
3	31	dead	2	\N	500	HTTP 500: {"ok":false,"status":500}	2026-12-02 01:27:07.393445+00
3	32	dead	2	\N	500	HTTP 500: {"ok":false,"status":500}	2026-12-02 01:27:07.393445+00
2	21	retry	4	2026-12-02 01:27:10.403197+00	500	HTTP 500: {"ok":false,"status":500}	2026-12-02 01:27:10.377223+00
\.


--
-- Data for Name: _events; Type: TABLE DATA; Schema: outbox; Owner: -
--

COPY outbox._events ("position", stream, version, type, data, metadata, event_id, created_at, xmark) FROM stdin;
1	order-1	1	created	{"n": 1}	{}	01a2345c-cea8-7e63-bc4c-caf0437223d9	2026-12-02 01:27:07.175848+00	745
2	order-1	2	paid	{"n": 1}	{"by": "card"}	01a2345c-cea9-792e-962c-fce56ab20ca3	2026-12-02 01:27:07.175848+00	745
3	order-2	1	created	{"n": 2}	{}	01a2345c-ceb7-7f14-837f-b9ab9d9063a2	2026-12-02 01:27:07.191505+00	745
4	order-2	2	paid	{"n": 2}	{"by": "card"}	01a2345c-ceb7-7e21-94a0-06e2f1c024e2	2026-12-02 01:27:07.191505+00	745
5	order-3	1	created	{"n": 3}	{}	01a2345c-ceb7-7b07-9865-9a73c5174184	2026-12-02 01:27:07.191611+00	745
6	order-3	2	paid	{"n": 3}	{"by": "card"}	01a2345c-ceb7-77b5-b2d9-153cff5df975	2026-12-02 01:27:07.191611+00	745
7	order-4	1	created	{"n": 4}	{}	01a2345c-ceb7-7d77-a0ad-d2620251a3f5	2026-12-02 01:27:07.19165+00	745
8	order-4	2	paid	{"n": 4}	{"by": "card"}	01a2345c-ceb7-7270-8eb8-517c28e05f1d	2026-12-02 01:27:07.19165+00	745
9	order-5	1	created	{"n": 5}	{}	01a2345c-ceb7-70a2-a560-f8515f0382aa	2026-12-02 01:27:07.191696+00	745
10	order-5	2	paid	{"n": 5}	{"by": "card"}	01a2345c-ceb7-7311-bd31-5c7a825e766e	2026-12-02 01:27:07.191696+00	745
11	cust-1	1	registered	{"name": "Ada"}	{}	01a2345c-ced6-7e45-a8bc-fe9fed8e93cc	2026-12-02 01:27:07.222192+00	747
13	order-6	1	created	null	{}	01a2345c-dbde-7e4c-b280-2607ed1c0260	2026-12-02 01:27:10.553323+00	768
14	order-6	2	paid	null	{}	01a2345c-dbdf-7255-ae55-ea40ec5abd2c	2026-12-02 01:27:10.553323+00	768
15	order-7	1	created	null	{}	01a2345c-dd4c-75e5-b770-68f9b810efb9	2026-12-02 01:27:10.922983+00	776
16	order-8	1	created	null	{}	01a2345c-dd59-7384-bda1-940154154846	2026-12-02 01:27:10.93742+00	776
17	order-9	1	created	null	{}	01a2345c-dd59-7062-89f2-3964f1aef4aa	2026-12-02 01:27:10.937554+00	776
\.


--
-- Data for Name: _inbox; Type: TABLE DATA; Schema: outbox; Owner: -
--

COPY outbox._inbox (consumer, message_id, consumed_at) FROM stdin;
billing-svc	msg_1	2026-12-02 01:27:07.303075+00
billing-svc	msg_2	2026-12-02 01:27:07.303075+00
billing-svc	msg_3	2026-12-02 01:27:07.303075+00
billing-svc	msg_4	2026-12-02 01:27:07.303075+00
billing-svc	msg_5	2026-12-02 01:27:07.303075+00
audit-svc	msg_1	2026-12-02 01:27:07.312325+00
\.


--
-- Data for Name: _messages; Type: TABLE DATA; Schema: outbox; Owner: -
--

COPY outbox._messages (id, topic, key, payload, headers, created_at, xmark) FROM stdin;
1	orders.created	k1	{"seq": 1}	{"trace": "1"}	2026-12-02 01:27:07.267262+00	754
2	orders.created	k2	{"seq": 2}	{"trace": "2"}	2026-12-02 01:27:07.267789+00	754
3	orders.created	k3	{"seq": 3}	{"trace": "3"}	2026-12-02 01:27:07.267796+00	754
4	orders.created	k0	{"seq": 4}	{"trace": "4"}	2026-12-02 01:27:07.267799+00	754
5	orders.created	k1	{"seq": 5}	{"trace": "5"}	2026-12-02 01:27:07.267802+00	754
6	orders.created	k2	{"seq": 6}	{"trace": "6"}	2026-12-02 01:27:07.267815+00	754
7	orders.created	k3	{"seq": 7}	{"trace": "7"}	2026-12-02 01:27:07.267818+00	754
8	orders.created	k0	{"seq": 8}	{"trace": "8"}	2026-12-02 01:27:07.267821+00	754
9	orders.created	k1	{"seq": 9}	{"trace": "9"}	2026-12-02 01:27:07.267824+00	754
10	orders.created	k2	{"seq": 10}	{"trace": "10"}	2026-12-02 01:27:07.267827+00	754
11	orders.created	k3	{"seq": 11}	{"trace": "11"}	2026-12-02 01:27:07.26783+00	754
12	orders.created	k0	{"seq": 12}	{"trace": "12"}	2026-12-02 01:27:07.267833+00	754
13	orders.created	k1	{"seq": 13}	{"trace": "13"}	2026-12-02 01:27:07.267835+00	754
14	orders.created	k2	{"seq": 14}	{"trace": "14"}	2026-12-02 01:27:07.267838+00	754
15	orders.created	k3	{"seq": 15}	{"trace": "15"}	2026-12-02 01:27:07.267841+00	754
16	orders.created	k0	{"seq": 16}	{"trace": "16"}	2026-12-02 01:27:07.267844+00	754
17	orders.created	k1	{"seq": 17}	{"trace": "17"}	2026-12-02 01:27:07.267847+00	754
18	orders.created	k2	{"seq": 18}	{"trace": "18"}	2026-12-02 01:27:07.26785+00	754
19	orders.created	k3	{"seq": 19}	{"trace": "19"}	2026-12-02 01:27:07.267853+00	754
20	orders.created	k0	{"seq": 20}	{"trace": "20"}	2026-12-02 01:27:07.267856+00	754
21	billing.charged	b1	{"seq": 1}	{}	2026-12-02 01:27:07.279858+00	756
22	billing.charged	b2	{"seq": 2}	{}	2026-12-02 01:27:07.27988+00	756
23	billing.charged	b0	{"seq": 3}	{}	2026-12-02 01:27:07.279884+00	756
24	billing.charged	b1	{"seq": 4}	{}	2026-12-02 01:27:07.279919+00	756
25	billing.charged	b2	{"seq": 5}	{}	2026-12-02 01:27:07.279922+00	756
26	billing.charged	b0	{"seq": 6}	{}	2026-12-02 01:27:07.279925+00	756
27	billing.charged	b1	{"seq": 7}	{}	2026-12-02 01:27:07.279927+00	756
28	billing.charged	b2	{"seq": 8}	{}	2026-12-02 01:27:07.27993+00	756
29	billing.charged	b0	{"seq": 9}	{}	2026-12-02 01:27:07.279932+00	756
30	audit.logged	\N	{"seq": 1}	{}	2026-12-02 01:27:07.290049+00	757
31	audit.logged	\N	{"seq": 2}	{}	2026-12-02 01:27:07.290081+00	757
32	audit.logged	\N	{"seq": 3}	{}	2026-12-02 01:27:07.290085+00	757
\.


--
-- Data for Name: _projections; Type: TABLE DATA; Schema: outbox; Owner: -
--

COPY outbox._projections (id, name, handler, reset, event_types, stream_prefix, mode, run_as, options, state, "position", events_applied, attempts, retry_at, last_error, last_applied_at, created_at) FROM stdin;
1	inline_orders	public.inline_h(outbox.events)	\N	\N	order-	inline	postgres	{"batch_size": 1000, "max_attempts": 10, "backoff_max_ms": 60000, "backoff_base_ms": 1000}	running	0	0	0	\N	\N	\N	2026-12-02 01:27:07.029904+00
2	async_typed	public.async_h(outbox.events)	public.async_reset()	{created,paid}	\N	async	postgres	{"batch_size": 3, "max_attempts": 10, "backoff_max_ms": 60000, "backoff_base_ms": 1000}	running	11	10	0	\N	\N	2026-12-02 01:27:07.249515+00	2026-12-02 01:27:07.054147+00
\.


--
-- Data for Name: _streams; Type: TABLE DATA; Schema: outbox; Owner: -
--

COPY outbox._streams (stream, version) FROM stdin;
order-1	2
order-2	2
order-3	2
order-4	2
order-5	2
cust-1	1
order-6	2
order-7	1
order-8	1
order-9	1
\.


--
-- Data for Name: stream_deletions; Type: TABLE DATA; Schema: outbox; Owner: -
--

COPY outbox.stream_deletions (stream_sha256, events_deleted, deleted_by, deleted_at, reason) FROM stdin;
e7f021d34bd4f3334d476f185dc9572bd24a7e24b58ca1200d7b23b74ddb6e8d	1	postgres	2026-12-02 01:27:07.25012+00	ticket-1
\.


--
-- Data for Name: async_seen; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.async_seen ("position", stream, type) FROM stdin;
1	order-1	created
2	order-1	paid
3	order-2	created
4	order-2	paid
5	order-3	created
6	order-3	paid
7	order-4	created
8	order-4	paid
9	order-5	created
10	order-5	paid
\.


--
-- Data for Name: gate; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.gate (id) FROM stdin;
1
\.


--
-- Data for Name: inline_seen; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.inline_seen (stream, version, type) FROM stdin;
order-1	1	created
order-1	2	paid
order-2	1	created
order-2	2	paid
order-3	1	created
order-3	2	paid
order-4	1	created
order-4	2	paid
order-5	1	created
order-5	2	paid
order-6	1	created
order-6	2	paid
order-7	1	created
order-8	1	created
order-9	1	created
\.


--
-- Name: _endpoints_id_seq; Type: SEQUENCE SET; Schema: outbox; Owner: -
--

SELECT pg_catalog.setval('outbox._endpoints_id_seq', 4, true);


--
-- Name: _events_position_seq; Type: SEQUENCE SET; Schema: outbox; Owner: -
--

SELECT pg_catalog.setval('outbox._events_position_seq', 17, true);


--
-- Name: _messages_id_seq; Type: SEQUENCE SET; Schema: outbox; Owner: -
--

SELECT pg_catalog.setval('outbox._messages_id_seq', 32, true);


--
-- Name: _projections_id_seq; Type: SEQUENCE SET; Schema: outbox; Owner: -
--

SELECT pg_catalog.setval('outbox._projections_id_seq', 2, true);


--
-- Name: async_seen async_seen_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.async_seen
    ADD CONSTRAINT async_seen_pkey PRIMARY KEY ("position");


--
-- Name: gate gate_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.gate
    ADD CONSTRAINT gate_pkey PRIMARY KEY (id);


--
-- Name: inline_seen inline_seen_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.inline_seen
    ADD CONSTRAINT inline_seen_pkey PRIMARY KEY (stream, version);


--
-- PostgreSQL database dump complete
--

\unrestrict whr1PuYoCMnXcXjKoqTo5xhUQu3Y5bodsdA9jvcdJpkTg22sqknwyc9ryMEmlyR

