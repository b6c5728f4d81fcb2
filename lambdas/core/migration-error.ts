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
