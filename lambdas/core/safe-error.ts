/**
 * What of an error may leave the process: in a log line, a Step Functions cause, or a message
 * stored in the control schema. Only the error's name, its message and the SQLSTATE, never a
 * row: a PostgreSQL error's `detail` ("Failing row contains (…)", "Key (email)=(…)"), `where`
 * (a COPY line with its values), `hint`, its parameters and the errors in its `cause` chain are
 * left behind. Messages of data exceptions (SQLSTATE class 22: "invalid input syntax for type
 * integer: "…"", "value "…" is out of range") quote the value they refused; those quotes are
 * withheld, also where such a message was folded into a MigrationError's message.
 *
 * Handlers log `safeError(error)` instead of the error, and throw `safeThrowable(error)`; core
 * code that records a failure's text uses `safeMessage(error)`.
 */

/** An error as it may be logged or reported. */
export interface SafeError {
  name: string;
  message: string;
  /** The SQLSTATE of the PostgreSQL error behind it, when there is one. */
  code?: string;
  /** Whether trying again may succeed (MigrationError's `retryable`), when known. */
  retryable?: boolean;
}

/** What replaces a quoted value in a data exception's message. */
export const WITHHELD = '"(value withheld)"';

const SQLSTATE = /^[0-9A-Z]{5}$/;

interface ErrorLike {
  name?: unknown;
  message?: unknown;
  code?: unknown;
  severity?: unknown;
  retryable?: unknown;
  cause?: unknown;
}

const asErrorLike = (error: unknown): ErrorLike | undefined =>
  typeof error === 'object' && error !== null ? (error as ErrorLike) : undefined;

/** The SQLSTATE of a PostgreSQL error (pg's DatabaseError carries `code` and `severity`). */
function sqlState(error: ErrorLike | undefined): string | undefined {
  const code = error?.code;
  return typeof code === 'string' && SQLSTATE.test(code) && typeof error?.severity === 'string'
    ? code
    : undefined;
}

/** A PostgreSQL error's message with the values of a data exception withheld. */
function redactedPgMessage(message: string, code: string): string {
  return code.startsWith('22') ? message.replace(/"(?:[^"]|"")*"/g, WITHHELD) : message;
}

/** Every PostgreSQL error in the cause chain (the error itself first), at most 10 deep. */
function pgErrors(error: unknown): { message: string; code: string }[] {
  const found: { message: string; code: string }[] = [];
  let current = asErrorLike(error);
  for (let depth = 0; current && depth < 10; depth++) {
    const code = sqlState(current);
    if (code && typeof current.message === 'string') found.push({ message: current.message, code });
    current = asErrorLike(current.cause);
  }
  return found;
}

/** The error's message, with every quoted value of a PostgreSQL data exception behind it withheld. */
export function safeMessage(error: unknown): string {
  const e = asErrorLike(error);
  let message = typeof e?.message === 'string' ? e.message : e === undefined ? String(error) : '(no message)';
  for (const pg of pgErrors(error)) {
    const redacted = redactedPgMessage(pg.message, pg.code);
    if (redacted !== pg.message) message = message.split(pg.message).join(redacted);
  }
  return message;
}

/** `Name: message` of an error, safe to record (see safeMessage). */
export function describeError(error: unknown): string {
  const name = asErrorLike(error)?.name;
  return `${typeof name === 'string' && name ? name : 'Error'}: ${safeMessage(error)}`;
}

/** The error as it may be logged: name, safe message, SQLSTATE, retryable; nothing else. */
export function safeError(error: unknown): SafeError {
  const e = asErrorLike(error);
  const name = typeof e?.name === 'string' && e.name ? e.name : 'Error';
  const code = pgErrors(error)[0]?.code;
  return {
    name,
    message: safeMessage(error),
    ...(code ? { code } : {}),
    ...(typeof e?.retryable === 'boolean' ? { retryable: e.retryable } : {}),
  };
}

/**
 * An Error to throw out of a Lambda handler in place of `error`: the same name (what the state
 * machines' Retry and Catch match) and safe message, the SQLSTATE as `code`, and no cause or
 * other property, so the runtime's report (errorType, errorMessage, trace) and Step Functions'
 * cause carry no row.
 */
export function safeThrowable(error: unknown): Error {
  const safe = safeError(error);
  const thrown = new Error(safe.message);
  thrown.name = safe.name;
  if (safe.code) Object.defineProperty(thrown, 'code', { value: safe.code, enumerable: false });
  if (safe.retryable !== undefined)
    Object.defineProperty(thrown, 'retryable', { value: safe.retryable, enumerable: false });
  // The original's frames, under the safe first line (its own first line repeats its message).
  const original = asErrorLike(error) as { stack?: unknown } | undefined;
  const frames =
    typeof original?.stack === 'string' ? original.stack.split('\n').filter((l) => /^\s+at /.test(l)) : [];
  thrown.stack = [`${safe.name}: ${safe.message}`, ...frames].join('\n');
  return thrown;
}
