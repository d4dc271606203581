/**
 * brokerState(): the broker's order object checked before it reaches SQL.
 */
import { assertEquals, assertThrows } from "@std/assert";
import { BrokerUnavailable } from "../../../functions/broker-order/broker_client.ts";
import { brokerState, differs } from "../../../functions/broker-order/broker_state.ts";

const BASE = { id: "b-1", client_order_id: "bo-1", status: "accepted" };

Deno.test("brokerState keeps decimals as text, cuts times to microseconds, and ignores an average before a fill", () => {
  const s = brokerState({
    ...BASE,
    status: "partially_filled",
    filled_qty: "1.5",
    filled_avg_price: "187.123456789123",
    updated_at: "2026-12-07T10:00:00.123456789Z",
  });
  assertEquals([s.filledQty, s.filledAvgPrice, s.updatedAt], [
    "1.5",
    "187.123456789123",
    "2026-12-07T10:00:00.123456Z",
  ]);
  const before = brokerState({
    ...BASE,
    filled_qty: "0",
    filled_avg_price: "0",
    updated_at: "2026-12-07T10:00:00Z",
  });
  assertEquals(before.filledAvgPrice, null);
  // No updated_at: the latest time the object has.
  assertEquals(
    brokerState({ ...BASE, created_at: "2026-12-07T09:00:00Z" }).updatedAt,
    "2026-12-07T09:00:00Z",
  );
});

Deno.test("brokerState refuses a malformed field as a broker failure, never a database error", () => {
  for (
    const bad of [
      { status: "Filled; drop table" },
      { filled_qty: "-1" },
      { filled_qty: "1", filled_avg_price: "abc" },
      { updated_at: "yesterday" },
      { updated_at: "2026-02-30T10:00:00Z" },
    ]
  ) {
    assertThrows(
      () => brokerState({ ...BASE, updated_at: "2026-12-07T10:00:00Z", ...bad }),
      BrokerUnavailable,
    );
  }
});

Deno.test("differs() tells a newer or different state from the stored one", () => {
  const s = brokerState({ ...BASE, updated_at: "2026-12-07T10:00:01Z" });
  assertEquals(
    differs(s, { status: "accepted", filledQty: "0", updatedAt: "2026-12-07T10:00:01Z" }),
    false,
  );
  assertEquals(
    differs(s, { status: "accepted", filledQty: "0", updatedAt: "2026-12-07T10:00:00Z" }),
    true,
  );
  assertEquals(
    differs(s, { status: "new", filledQty: "0", updatedAt: "2026-12-07T10:00:01Z" }),
    true,
  );
  assertEquals(differs(s, { status: "accepted", filledQty: "0", updatedAt: null }), true);
});
