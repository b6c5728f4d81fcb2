import { MigrationError, MirrorWriteError, type MirrorWriteFailure } from './errors';

/**
 * The named errors of the write switch and of the reverse mirror (V2 the write primary, V1 kept
 * current from it). Kept beside errors.ts, same base class and conventions.
 */

/** The V1 half (the reverse mirror) of a write failed; the caller's V2 write succeeded. */
export class DualWriteV1Error extends MirrorWriteError {
  constructor(...failure: MirrorWriteFailure) {
    super('Mirroring', 'V1', ...failure);
  }
}

/**
 * A telemetry row written to V2 first needs a V1 id (`legacy_id`) from V1's own sequence, and
 * none could be reserved (V1 unreachable for longer than the reserved block lasted).
 */
export class LegacyIdUnavailableError extends MigrationError {
  override readonly retryable = true;
  constructor(reason: string, options?: { cause?: unknown }) {
    super(`No V1 id could be reserved for a telemetry row written to V2 first: ${reason}`, {}, options);
  }
}

/** A row V2 holds that V1 cannot take: named by table and key, with why. */
export interface UnmirrorableRow {
  table: string;
  key: string;
  reason: 'other-tenant' | 'no-legacy-id';
  /** The row's tenant, for rows of another tenant. */
  tenant?: string;
}

/**
 * Rolling the writes back to V1 would leave rows behind that only V2 holds and V1 cannot take
 * (V1 is single-tenant; telemetry without a V1 id has none). Listed; a forced rollback goes on.
 */
export class UnmirrorableRowsError extends MigrationError {
  constructor(
    readonly rows: UnmirrorableRow[],
    readonly total: number,
  ) {
    const shown = rows
      .slice(0, 10)
      .map(
        (r) => `${r.table} ${r.key} (${r.reason === 'other-tenant' ? `tenant ${r.tenant}` : 'no legacy_id'})`,
      );
    super(
      `V2 holds ${total} row(s) that V1 cannot take, which a rollback of the writes to V1 would leave behind: ` +
        `${shown.join('; ')}${total > shown.length ? '; …' : ''}. Move or delete them, or roll back with "force": true`,
      { rows, total },
    );
  }
}

/** The repair queue still held messages when the rollback's wait for it ran out. */
export class RepairQueueNotDrainedError extends MigrationError {
  override readonly retryable = true;
  constructor(
    readonly waiting: number,
    readonly inFlight: number,
    readonly waitedSeconds: number,
  ) {
    super(
      `The repair queue still holds ${waiting} waiting and ${inFlight} in-flight message(s) after ${waitedSeconds} s; ` +
        'rows whose mirror failed are not in V1 yet',
      { waiting, inFlight, waitedSeconds },
    );
  }
}
