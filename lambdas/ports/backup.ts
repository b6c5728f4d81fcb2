/**
 * The backup port: Phase 1 backs V1 up before anything else, and cleanup archives it. On AWS
 * an RDS instance or Aurora cluster snapshot (lambdas/adapters/aws/rds-backup.ts); locally a
 * `pg_dump` archive or a built-in export, both of one snapshot of a live V1
 * (lambdas/adapters/local/pg-backup.ts).
 * Creating is split from waiting so a state machine can poll with a Wait state.
 */
export interface BackupRef {
  /** Snapshot identifier or backup folder name. */
  id: string;
  kind: 'rds-snapshot' | 'aurora-snapshot' | 'pg_dump' | 'export';
  /** Where it is: ARN or backup folder. */
  location: string;
}

export type BackupStatus = 'creating' | 'available' | 'failed';

export interface BackupVerification {
  /** What was checked, e.g. row counts per table or the archive's table of contents. */
  evidence: Record<string, unknown>;
}

export interface BackupPort {
  /** Starts a backup named after `label`; returns at once with a reference. */
  start(label: string): Promise<BackupRef>;
  status(ref: BackupRef): Promise<BackupStatus>;
  /**
   * Checks that an available backup is usable; throws BackupError saying what is wrong.
   * `expectedRowCounts` are V1's counts taken just before the backup started.
   */
  verify(ref: BackupRef, expectedRowCounts: Record<string, number>): Promise<BackupVerification>;
}
