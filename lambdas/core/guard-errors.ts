import { MigrationError } from './migration-error';

/*
 * The errors of the control plane's guards: the health gate's alarms, phase order, the lock,
 * refused actions, missing confirmations.
 */

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
    /** What the liveness check found about the holder (RUNNING, or why it cannot tell). */
    readonly holderStatus?: string,
  ) {
    super(
      `The migration is locked by ${holder} since ${since.toISOString()}${holderStatus ? ` (${holderStatus})` : ''}; ${requestedBy} was refused`,
      { holder, since: since.toISOString(), requestedBy, ...(holderStatus ? { holderStatus } : {}) },
    );
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

/**
 * Rolling back after dual-write stopped would lose the writes V1 has not seen since; after the
 * rename, V1 has no tables to read at all.
 */
export class RollbackRefusedError extends MigrationError {
  constructor(
    readonly dualWriteStoppedAt: Date,
    readonly renamedAt?: Date,
  ) {
    super(
      renamedAt
        ? `Rollback refused: V1's tables were renamed to <name>_v1_archived at ${renamedAt.toISOString()}, so V1 ` +
            'cannot serve reads; no rollback, forced or not, can send traffic there. Restore V1 from the cleanup archive instead.'
        : `Rollback refused: dual-write was stopped at ${dualWriteStoppedAt.toISOString()}, so V1 has missed every ` +
            'write since; sending traffic back to V1 would lose them. Pass force with its confirmation to roll back anyway.',
      {
        dualWriteStoppedAt: dualWriteStoppedAt.toISOString(),
        ...(renamedAt ? { renamedAt: renamedAt.toISOString() } : {}),
      },
    );
  }
}

/**
 * A task that changes the migration was called by a run that does not hold the migration lock
 * (a direct invocation, or a run whose lock another has taken over); nothing was changed.
 */
export class LockNotHeldError extends MigrationError {
  constructor(
    readonly task: string,
    readonly actor: string,
    readonly holder: string | null,
  ) {
    super(
      `The ${task} task refused: ${actor} does not hold the migration lock (${holder ? `held by ${holder}` : 'nobody holds it'}); only the run that took the lock may change the migration`,
      { task, actor, holder },
    );
  }
}

/**
 * A destructive step was asked for without its confirmation words; nothing was changed. The
 * message says what the step does and which input confirms it.
 */
export class ConfirmationRequiredError extends MigrationError {
  constructor(
    readonly action: string,
    readonly consequence: string,
    readonly confirmation: string,
    readonly howTo: string,
  ) {
    super(
      `${action} needs a confirmation: it ${consequence}. To go ahead, ${howTo} with "confirm": "${confirmation}"`,
      { action, confirmation },
    );
  }
}
