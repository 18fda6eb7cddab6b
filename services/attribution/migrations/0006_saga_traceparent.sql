-- The W3C trace context (`traceparent`) of the RPC that started each saga
-- (RecordSale, RecordSales, RecordRefund), so that its steps, run later by a
-- worker, join that RPC's trace: one sale is one trace across the services
-- (DESIGN §6). NULL when the call was not traced. (0006, not 0005: the
-- attribution feature branch takes 0005.)
ALTER TABLE sagas ADD COLUMN traceparent text;
