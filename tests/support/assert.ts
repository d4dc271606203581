/**
 * The few assertions the tests use, over `node:assert` (Deno's std cannot be fetched here).
 */
import assert from "node:assert/strict";

export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  assert.deepStrictEqual(actual, expected, msg);
}
export function assertNotEquals<T>(actual: T, expected: T, msg?: string): void {
  assert.notDeepStrictEqual(actual, expected, msg);
}
export function assert_(value: unknown, msg?: string): asserts value {
  assert.ok(value, msg);
}
export { assert_ as assert };
export function assertMatch(actual: string, re: RegExp, msg?: string): void {
  assert.match(actual, re, msg);
}
export function assertStringIncludes(actual: string, expected: string, msg?: string): void {
  assert.ok(
    actual.includes(expected),
    msg ?? `expected ${JSON.stringify(actual)} to include ${JSON.stringify(expected)}`,
  );
}
export async function assertRejects(
  fn: () => Promise<unknown>,
  // deno-lint-ignore no-explicit-any
  ErrorClass?: new (...args: any[]) => Error,
  msgIncludes?: string,
): Promise<Error> {
  try {
    await fn();
  } catch (err) {
    return expectError(err, ErrorClass, msgIncludes);
  }
  throw new assert.AssertionError({ message: "expected the promise to reject" });
}
export function assertLess(actual: number, expected: number, msg?: string): void {
  assert.ok(actual < expected, msg ?? `expected ${actual} < ${expected}`);
}
/** Runs `fn`, which must throw synchronously; returns what it threw (the sync `assertRejects`). */
export function assertThrows(
  fn: () => unknown,
  // deno-lint-ignore no-explicit-any
  ErrorClass?: new (...args: any[]) => Error,
  msgIncludes?: string,
): Error {
  try {
    fn();
  } catch (err) {
    return expectError(err, ErrorClass, msgIncludes);
  }
  throw new assert.AssertionError({ message: "expected a throw" });
}

/** Checks a thrown value's class and message (assertRejects and assertThrows). */
function expectError(
  err: unknown,
  // deno-lint-ignore no-explicit-any
  ErrorClass?: new (...args: any[]) => Error,
  msgIncludes?: string,
): Error {
  if (ErrorClass && !(err instanceof ErrorClass)) {
    throw new assert.AssertionError({
      message: `expected ${ErrorClass.name}, got ${(err as Error)?.name}: ${
        (err as Error)?.message
      }`,
    });
  }
  if (msgIncludes && !String((err as Error)?.message).includes(msgIncludes)) {
    throw new assert.AssertionError({
      message: `expected message to include ${msgIncludes}, got ${(err as Error)?.message}`,
    });
  }
  return err as Error;
}
