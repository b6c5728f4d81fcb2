import { MigrationError } from './migration-error';

/* The errors of the control plane's guards: the health gate's alarms, phase order, the lock, refused actions. */

/**
 * The alarms the cutover's health gate reads could not be read: DescribeAlarms failed, or the
 * composite alarm (or a named alarm) does not exist, so health cannot be told. Never read as
 * "no alarm firing".
 */
export class AlarmLookupError extends MigrationError {
  override readonly retryable: boolean;
  constructor(
    readonly alarms: string[],
    reason: string,
    options?: { cause?: unknown; retryable?: boolean },
  ) {
    super(`Cannot read the alarms ${alarms.join(', ')}: ${reason}`, { alarms }, options);
    this.retryable = options?.retryable ?? false;
  }
}

/** A phase was asked for before the phases it depends on were complete. */
export class PhaseOrderError extends MigrationError {
  constructor(
    readonly phase: string,
    readonly missing: string[],
    reason?: string,
  ) {
    super(reason ?? `Phase ${phase} cannot start: ${missing.join(', ')} must be complete first`, {
      phase,
      missing,
    });
  }
}

/** Another run holds the migration lock; only one acts at a time. */
export class MigrationLockedError extends MigrationError {
  constructor(
    readonly holder: string,
    readonly since: Date,
    readonly requestedBy: string,
  ) {
    super(`The migration is locked by ${holder} since ${since.toISOString()}; ${requestedBy} was refused`, {
      holder,
      since: since.toISOString(),
      requestedBy,
    });
  }
}

/** A guard refused an action (cutover, cleanup, rollback, dropping archives); nothing changed. */
export class GuardRefusedError extends MigrationError {
  constructor(
    readonly action: string,
    readonly reasons: string[],
  ) {
    super(`${action} refused: ${reasons.join('; ')}`, { action, reasons });
  }
}

/** Rolling back after dual-write stopped would lose the writes V1 has not seen since. */
export class RollbackRefusedError extends MigrationError {
  constructor(readonly dualWriteStoppedAt: Date) {
    super(
      `Rollback refused: dual-write was stopped at ${dualWriteStoppedAt.toISOString()}, so V1 has missed every ` +
        'write since; sending traffic back to V1 would lose them. Pass force to roll back anyway.',
      { dualWriteStoppedAt: dualWriteStoppedAt.toISOString() },
    );
  }
}
