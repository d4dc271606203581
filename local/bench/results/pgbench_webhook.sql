\set user 100000000000 + :client_id
\set r1h random(10000000, 99999999)
\set r1 random(100000000000, 999999999999)
\set r2h random(10000000, 99999999)
\set r2 random(100000000000, 999999999999)
\set r3h random(10000000, 99999999)
\set r3 random(100000000000, 999999999999)
\set r4h random(10000000, 99999999)
\set r4 random(100000000000, 999999999999)
\set r5h random(10000000, 99999999)
\set r5 random(100000000000, 999999999999)
begin \; select outcome, reason from internal.stripe_event_apply(E'evt_:r2h:r2', E'checkout.session.completed', E'2026-12-02T14:30:19.000Z'::timestamptz, E'{"kind":"checkout","user":":r1h-0000-4000-9000-:r1","session":"cs_test_:r3h:r3","payment_intent":"pi_:r4h:r4","customer":"cus_:r5h:r5","amount_total":4900,"currency":"usd","status":"paid","rank":2}'::jsonb);
commit;
