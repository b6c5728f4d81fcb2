/**
 * The named errors of the migration (see MigrationError). This module is their one import
 * path: the base class and the guards' errors live in their own modules and are re-exported here.
 */
import { MigrationError } from './migration-error';

export {
  MigrationError,
  RETRYABLE_TASK_ERROR,
  RetryableTaskError,
  originalFailure,
  taskFailure,
} from './migration-error';
export {
  AlarmLookupError,
  ConfirmationRequiredError,
  GuardRefusedError,
  LockNotHeldError,
  MigrationLockedError,
  PhaseOrderError,
  RollbackRefusedError,
} from './guard-errors';

/** A configuration value (environment, file, CLI flag, CDK context) is invalid. */
export class ConfigError extends MigrationError {
  constructor(
    readonly issues: { field: string; problem: string }[],
    readonly source = 'configuration',
  ) {
    super(`Invalid ${source}: ${issues.map((i) => `${i.field}: ${i.problem}`).join('; ')}`, {
      issues,
      source,
    });
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
    readonly where: string,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(
      `Cannot connect to the ${target} database at ${where}: ${reason}`,
      { target, where, reason },
      options,
    );
  }
}

/** A transient database failure (lock timeout, serialization failure, dropped connection). */
export class TransientDatabaseError extends MigrationError {
  override readonly retryable = true;
}

/** V1 does not have the tables and columns the migration reads; the message says what to check. */
export class V1SchemaMismatchError extends MigrationError {
  constructor(
    readonly missing: string[],
    readonly schema = 'public',
  ) {
    super(
      `The V1 database does not match the expected schema; missing: ${missing.join(', ')}. Nothing was written. ` +
        `Check that the configuration points at V1 (its database URL or host, and schemas.v1 / V1_SCHEMA, now "${schema}"): ` +
        'V1 must have the tables and columns of sql/v1/schema.sql. Once it does, advance again.',
      { missing, schema },
    );
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
export class BackupError extends MigrationError {}

/** The default tenant cannot be created because another tenant already has its slug. */
export class TenantConflictError extends MigrationError {
  constructor(
    readonly tenantId: string,
    readonly slug: string,
  ) {
    super(`Cannot create tenant ${tenantId}: another tenant already uses the slug "${slug}"`, {
      tenantId,
      slug,
    });
  }
}

/** Telemetry storage (TimescaleDB or native partitioning) could not be set up. */
export class StorageSetupError extends MigrationError {}

/**
 * A runtime switch read by the backend (traffic percentage, dual-write) is invalid, missing,
 * or could not be fetched; the reader keeps its last good value (`kept`) and reports this.
 */
export class TrafficParameterError extends MigrationError {
  constructor(
    readonly parameter: string,
    readonly problem: 'invalid' | 'missing' | 'fetch-failed',
    readonly value: string | undefined,
    readonly kept: number | boolean | string,
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

/** A queue message body is larger than SQS accepts (256 KiB); nothing of the call was sent. */
export class MessageTooLargeError extends MigrationError {
  constructor(
    readonly oversized: { index: number; bytes: number }[],
    readonly limitBytes: number,
  ) {
    super(
      `${oversized.length} message ${oversized.length === 1 ? 'body exceeds' : 'bodies exceed'} the queue limit ` +
        `of ${limitBytes} bytes (${oversized.map((o) => `#${o.index}: ${o.bytes} bytes`).join(', ')}); nothing was sent`,
      { oversized, limitBytes },
    );
  }
}

/** One body that `QueuePort.sendAll` could not send: its index in the call, and why. */
export interface QueueSendFailure {
  index: number;
  reason: string;
  /** The SQS error code or error name, when there is one. */
  code?: string;
  /** Whether sending it again may succeed (throttling, a server fault) or not (a sender fault). */
  retryable: boolean;
}

/**
 * Some bodies could not be sent after retries; the others were sent. Sending the same bodies
 * again is safe (delivery is at-least-once and window copies are idempotent), so the error is
 * retryable unless one of the failures is a sender fault that another try would repeat.
 */
export class QueueSendError extends MigrationError {
  override readonly retryable: boolean;

  constructor(
    readonly failures: QueueSendFailure[],
    readonly sent: number,
    readonly total: number,
    queue?: string,
  ) {
    const shown = failures.slice(0, 10).map((f) => `#${f.index} (${f.reason})`);
    if (failures.length > shown.length) shown.push(`… and ${failures.length - shown.length} more`);
    super(
      `${failures.length} of ${total} message bodies could not be sent${queue ? ` to ${queue}` : ''}: ${shown.join(', ')}`,
      { failed: failures.length, sent, total, queue, failures },
    );
    this.retryable = failures.every((f) => f.retryable);
  }
}

/** The local in-process queue was used in a state that does not allow it (started twice, stopped while awaited). */
export class LocalQueueStateError extends MigrationError {
  constructor(message: string, details: { queued: number; inFlight: number; running: boolean }) {
    super(message, details);
  }
}

/** A queue message body is not a valid work message; it goes to the DLQ, the others carry on. */
export class InvalidMessageError extends MigrationError {
  constructor(
    readonly problem: string,
    readonly body: string,
  ) {
    super(`Invalid work message: ${problem}`, { problem, body: body.slice(0, 500) });
  }
}

/** A message names a window that the control schema does not have. */
export class WindowNotFoundError extends MigrationError {
  constructor(readonly windowId: number) {
    super(`Window ${windowId} does not exist in the control schema`, { windowId });
  }
}

/** A window's rows reference parents (devices, users) that V2 does not have yet: retried later. */
export class ParentRowsMissingError extends MigrationError {
  override readonly retryable = true;
  constructor(
    readonly table: string,
    readonly windowId: number,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(
      `Window ${windowId} of ${table} references rows V2 does not have yet: ${reason}`,
      { table, windowId },
      options,
    );
  }
}

/** A V1 row cannot be written to V2 under the mapping; its window fails, naming the row. */
export class UnmappableRowError extends MigrationError {
  constructor(
    readonly table: string,
    readonly windowId: number,
    readonly rowKey: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(
      `V1 row ${rowKey} of ${table} (window ${windowId}) cannot be mapped to V2: ${reason}`,
      {
        table,
        windowId,
        rowKey,
      },
      options,
    );
  }
}

/** Copying a window failed for a reason other than the named ones above. */
export class WindowCopyError extends MigrationError {
  constructor(
    readonly table: string,
    readonly windowId: number,
    reason: string,
    options?: { cause?: unknown; retryable?: boolean },
  ) {
    super(`Copying window ${windowId} of ${table} failed: ${reason}`, { table, windowId }, options);
    this.retryable = options?.retryable ?? false;
  }
  override readonly retryable: boolean;
}

/** The backfill cannot complete: windows failed for good (they are in the DLQ and named here). */
export class BackfillFailedError extends MigrationError {
  constructor(readonly failures: { windowId: number; table: string; error: string }[]) {
    super(
      `Backfill incomplete: ${failures.length} window(s) failed: ` +
        failures
          .slice(0, 5)
          .map((f) => `${f.table} window ${f.windowId} (${f.error})`)
          .join('; '),
      { failures },
    );
  }
}

/**
 * A database secret could not be fetched from Secrets Manager, or does not hold the RDS secret
 * shape ({username, password, host?, port?, dbname?}). The message names the secret and the bad
 * fields, never a value of the secret.
 */
export class DatabaseSecretError extends MigrationError {
  constructor(
    readonly secretArn: string,
    readonly problem: string,
    options?: { cause?: unknown; retryable?: boolean },
  ) {
    super(`Database secret ${secretArn} is unusable: ${problem}`, { secretArn, problem }, options);
    this.retryable = options?.retryable ?? false;
  }
  override readonly retryable: boolean;
}

/** The row, the operation and why, as a mirror-write error is made of them. */
export type MirrorWriteFailure = [
  table: string,
  rowId: string,
  operation: string,
  reason: string,
  options?: { cause?: unknown },
];

/**
 * The mirror half of a dual write failed: the base of DualWriteV2Error (V2 the mirror) and
 * DualWriteV1Error (V1 the mirror, once V2 is the write primary). `write` and `side` word the
 * message ("<write> <table> <id> (<operation>) to <side> failed: <reason>").
 */
export abstract class MirrorWriteError extends MigrationError {
  override readonly retryable = true;
  readonly table: string;
  readonly rowId: string;
  readonly operation: string;
  protected constructor(write: string, side: 'V1' | 'V2', ...failure: MirrorWriteFailure) {
    const [table, rowId, operation, reason, options] = failure;
    super(
      `${write} ${table} ${rowId} (${operation}) to ${side} failed: ${reason}`,
      { table, rowId, operation },
      options,
    );
    this.table = table;
    this.rowId = rowId;
    this.operation = operation;
  }
}

/**
 * The V2 half of a dual write failed (V2 unreachable, connection lost, constraint refused,
 * timed out). The caller's V1 write stood; a repair of the row was requested.
 */
export class DualWriteV2Error extends MirrorWriteError {
  constructor(...failure: MirrorWriteFailure) {
    super('Dual write of', 'V2', ...failure);
  }
}

/** V2 holds the row's key for another tenant, so the single-tenant sync leaves it alone. */
export class V2TenantMismatchError extends MigrationError {
  constructor(
    readonly table: string,
    readonly rowId: string,
    readonly tenantId: string,
  ) {
    super(`V2 ${table} already holds ${rowId} for a tenant other than ${tenantId}; it was not changed`, {
      table,
      rowId,
      tenantId,
    });
  }
}

/** Re-syncing one row V1 → V2 failed; the repair message is redelivered, or ends in the DLQ. */
export class RepairRowError extends MigrationError {
  override readonly retryable: boolean;
  constructor(
    readonly table: string,
    readonly rowId: string,
    reason: string,
    options?: { cause?: unknown; retryable?: boolean; target?: 'V1' | 'V2' },
  ) {
    super(
      `Repairing ${table} ${rowId} in ${options?.target ?? 'V2'} failed: ${reason}`,
      { table, rowId },
      options,
    );
    this.retryable = options?.retryable ?? false;
  }
}

/** A shadow read of V2 failed; it is reported, never thrown into the reader's caller. */
export class ShadowReadError extends MigrationError {
  constructor(
    readonly table: string,
    readonly rowId: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(`Shadow read of ${table} ${rowId} from V2 failed: ${reason}`, { table, rowId }, options);
  }
}

/** Verification found windows where V2 differs from V1 (after repair, when repair ran). */
export class VerificationFailedError extends MigrationError {
  constructor(
    reason: string,
    readonly windows: { table: string; windowId: number; v1Rows?: number; v2Rows?: number }[],
  ) {
    super(`Verification failed: ${reason}`, { windows: windows.slice(0, 50) });
  }
}

/**
 * A throw-away local PostgreSQL (embedded, or the TimescaleDB test server) cannot be started:
 * the message says why and what to do.
 */
export class LocalPostgresError extends MigrationError {
  constructor(message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, details, options);
  }
}
