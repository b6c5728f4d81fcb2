/**
 * Every failure the migration reports is a `MigrationError` subclass whose `name` is stable:
 * the state machines' Retry and Catch rules match these names, so a retryable error and a
 * fatal one are told apart by name alone. Each carries the facts needed to act on it.
 */
export class MigrationError extends Error {
  /** Whether the state machine (or a queue redelivery) may simply try again. */
  readonly retryable: boolean = false;
  readonly details: Record<string, unknown>;

  constructor(message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.details = details;
  }

  toJSON(): Record<string, unknown> {
    return { name: this.name, message: this.message, ...this.details };
  }
}

/**
 * The one error name a state machine task's Retry matches for our errors (beside the Lambda
 * service's own transient errors): a task that fails with an error whose `retryable` is true
 * throws it under this name (see `taskFailure`), any other error under its own. What Step
 * Functions retries is thus what the error itself says, per instance: a throttled alarm lookup
 * is tried again, an access-denied one is not.
 */
export const RETRYABLE_TASK_ERROR = 'RetryableTaskError';

/**
 * A retryable failure of a state machine task, as Step Functions sees it: its message starts
 * with the original error's name, so that the failure path records that name (`originalFailure`)
 * once the retries are spent.
 */
export class RetryableTaskError extends MigrationError {
  override readonly retryable = true;
  constructor(readonly original: MigrationError) {
    super(
      `${original.name}: ${original.message}`,
      { error: original.name, ...original.details },
      {
        cause: original,
      },
    );
  }
}

/** What a state machine task throws for `error`: a retryable MigrationError under RETRYABLE_TASK_ERROR, anything else as it is. */
export function taskFailure(error: unknown): unknown {
  return error instanceof MigrationError && error.retryable && !(error instanceof RetryableTaskError)
    ? new RetryableTaskError(error)
    : error;
}

/** The failure a task really had, from what Step Functions caught (`Error`, the cause's message). */
export function originalFailure(error: string, message: string): { error: string; message: string } {
  if (error !== RETRYABLE_TASK_ERROR) return { error, message };
  const named = /^(\w+Error): ([\s\S]*)$/.exec(message);
  return named ? { error: named[1], message: named[2] } : { error, message };
}
