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

/** A configuration value (environment, file, CLI flag, CDK context) is invalid. */
export class ConfigError extends MigrationError {
  constructor(
    readonly issues: { field: string; problem: string }[],
    source = 'configuration',
  ) {
    super(`Invalid ${source}: ${issues.map((i) => `${i.field}: ${i.problem}`).join('; ')}`, { issues, source });
  }
}

/** An input from outside (execution input, SQS body, CLI flags) does not match its schema. */
export class InvalidInputError extends MigrationError {
  constructor(
    readonly what: string,
    readonly issues: { field: string; problem: string }[],
  ) {
    super(`Invalid ${what}: ${issues.map((i) => `${i.field || '(root)'}: ${i.problem}`).join('; ')}`, {
      what,
      issues,
    });
  }
}

/** The database cannot be reached, or refused the credentials, or does not exist. */
export class DatabaseConnectionError extends MigrationError {
  constructor(
    readonly target: string,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(`Cannot connect to the ${target} database: ${reason}`, { target, reason }, options);
  }
}

/** A transient database failure (lock timeout, serialization failure, dropped connection). */
export class TransientDatabaseError extends MigrationError {
  override readonly retryable = true;
  constructor(message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, details, options);
  }
}

/** V1 does not have the tables and columns the migration reads. */
export class V1SchemaMismatchError extends MigrationError {
  constructor(readonly missing: string[]) {
    super(`The V1 database does not match the expected schema; missing: ${missing.join(', ')}`, { missing });
  }
}

/** A schema migration file that was already applied has been edited since. */
export class MigrationChecksumMismatchError extends MigrationError {
  constructor(
    readonly file: string,
    readonly appliedChecksum: string,
    readonly currentChecksum: string,
  ) {
    super(
      `Migration ${file} was applied with checksum ${appliedChecksum} but the file now has ${currentChecksum}; ` +
        'applied migrations must never be edited: add a new numbered file instead',
      { file, appliedChecksum, currentChecksum },
    );
  }
}

/** A schema migration file failed to apply (its transaction was rolled back). */
export class MigrationApplyError extends MigrationError {
  constructor(
    readonly file: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(`Migration ${file} failed and was rolled back: ${reason}`, { file }, options);
  }
}

/** The backup could not be made, or it was made but is not usable. */
export class BackupError extends MigrationError {
  constructor(message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, details, options);
  }
}

/** Telemetry storage (TimescaleDB or native partitioning) could not be set up. */
export class StorageSetupError extends MigrationError {
  constructor(message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, details, options);
  }
}

/**
 * A runtime switch read by the backend (traffic percentage, dual-write) is invalid, missing,
 * or could not be fetched; the reader keeps its last good value (`kept`) and reports this.
 */
export class TrafficParameterError extends MigrationError {
  constructor(
    readonly parameter: string,
    readonly problem: 'invalid' | 'missing' | 'fetch-failed',
    readonly value: string | undefined,
    readonly kept: number | boolean,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(
      `Parameter ${parameter} is ${problem}: ${reason}; keeping ${String(kept)}`,
      { parameter, problem, value, kept },
      options,
    );
  }
}
