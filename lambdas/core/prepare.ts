import type { Pool } from 'pg';
import type { MigrationConfig } from './config';
import { ident } from './db';
import { BackupError, TenantConflictError } from './errors';
import { auditEvent } from './migration-state';
import { migrate, projectMigrationSets } from './migrator';
import { setupTelemetryStorage, type StorageResult } from './storage';
import { checkV1Schema, countV1Rows } from './v1-schema';
import type { BackupPort, BackupRef } from '../ports/backup';

export interface PrepareStep {
  step: 'check-v1' | 'backup' | 'deploy-v2' | 'telemetry-storage' | 'default-tenant';
  /** `done` when this run changed something, `unchanged` when it was already in place. */
  outcome: 'done' | 'unchanged';
  detail: string;
  evidence?: Record<string, unknown>;
}

export interface PrepareContext {
  v1: Pool;
  v2: Pool;
  config: MigrationConfig;
  backup: BackupPort;
  /** Who or what runs this (execution ARN, `rehearsal`, a person). */
  actor: string;
  log?: (step: PrepareStep) => void;
  /** Poll interval and limit while waiting for the backup (locally it is ready at once). */
  backupPollMs?: number;
  backupTimeoutMs?: number;
  /** Injected for tests: whether the timescaledb extension is available. */
  isTimescaleAvailable?: (v2: Pool) => Promise<boolean>;
}

export interface PrepareReport {
  steps: PrepareStep[];
  storage: StorageResult;
}

/** Waits until a started backup is available; throws BackupError when it fails or times out. */
export async function waitForBackup(
  port: BackupPort,
  ref: BackupRef,
  options: { pollMs?: number; timeoutMs?: number } = {},
): Promise<void> {
  const deadline = Date.now() + (options.timeoutMs ?? 2 * 60 * 60 * 1000);
  for (;;) {
    const status = await port.status(ref);
    if (status === 'available') return;
    if (status === 'failed')
      throw new BackupError(`backup ${ref.id} failed`, { backup: ref.id, kind: ref.kind });
    if (Date.now() > deadline) {
      throw new BackupError(`backup ${ref.id} was not available in time`, { backup: ref.id, kind: ref.kind });
    }
    await new Promise((r) => setTimeout(r, options.pollMs ?? 15_000));
  }
}

/**
 * Phase 1. Each step is idempotent and says what it did: check V1's schema (before anything
 * else), back V1 up and check the backup, deploy the V2 schema, set up telemetry storage, and
 * create the default tenant. A second run finds everything in place and changes nothing.
 */
export async function runPrepare(ctx: PrepareContext): Promise<PrepareReport> {
  const { v1, v2, config } = ctx;
  const control = config.schemas.control;
  const steps: PrepareStep[] = [];
  const report = (step: PrepareStep) => {
    steps.push(step);
    ctx.log?.(step);
  };

  const shape = await checkV1Schema(v1, config.schemas.v1);
  report({
    step: 'check-v1',
    outcome: 'unchanged',
    detail: `V1 has all ${shape.tables} tables and ${shape.columns} columns`,
  });

  const [controlSet, v2Set] = projectMigrationSets(config.schemas);
  const controlResult = await migrate(v2, control, controlSet);

  const previous = await v2.query<{
    id: string;
    kind: string;
    verified_at: Date;
    row_counts: Record<string, number>;
  }>(
    `SELECT id, kind, verified_at, row_counts FROM ${ident(control)}.backups
      WHERE verified_at IS NOT NULL ORDER BY verified_at DESC LIMIT 1`,
  );
  if (previous.rows.length > 0) {
    const b = previous.rows[0];
    report({
      step: 'backup',
      outcome: 'unchanged',
      detail: `verified backup ${b.id} (${b.kind}) from ${b.verified_at.toISOString()} already exists`,
      evidence: { backup: b.id, rowCounts: b.row_counts },
    });
  } else {
    const counts = await countV1Rows(v1, config.schemas.v1);
    const ref = await ctx.backup.start('v1_before_migration');
    await v2.query(
      `INSERT INTO ${ident(control)}.backups (id, kind, location, row_counts) VALUES ($1, $2, $3, $4)`,
      [ref.id, ref.kind, ref.location, JSON.stringify(counts)],
    );
    await waitForBackup(ctx.backup, ref, { pollMs: ctx.backupPollMs, timeoutMs: ctx.backupTimeoutMs });
    const verification = await ctx.backup.verify(ref, counts);
    await v2.query(`UPDATE ${ident(control)}.backups SET verified_at = now() WHERE id = $1`, [ref.id]);
    await auditEvent(ctx, 'backup.created', { ...ref, ...verification.evidence });
    report({
      step: 'backup',
      outcome: 'done',
      detail: `backed up V1 as ${ref.kind} ${ref.location} and checked it`,
      evidence: { backup: ref.id, kind: ref.kind, ...verification.evidence },
    });
  }

  const v2Result = await migrate(v2, control, v2Set);
  const appliedFiles = [
    ...controlResult.applied.map((f) => `control/${f}`),
    ...v2Result.applied.map((f) => `v2/${f}`),
  ];
  if (appliedFiles.length > 0) await auditEvent(ctx, 'schema.applied', { files: appliedFiles });
  report({
    step: 'deploy-v2',
    outcome: appliedFiles.length > 0 ? 'done' : 'unchanged',
    detail:
      appliedFiles.length > 0
        ? `applied ${appliedFiles.join(', ')}`
        : `V2 schema up to date (${controlResult.alreadyApplied.length + v2Result.alreadyApplied.length} files)`,
  });

  const storage = await setupTelemetryStorage(v2, config, { isTimescaleAvailable: ctx.isTimescaleAvailable });
  if (storage.created) await auditEvent(ctx, 'storage.chosen', { ...storage });
  report({
    step: 'telemetry-storage',
    outcome: storage.created ? 'done' : 'unchanged',
    detail: `${storage.kind}: ${storage.reason}${storage.partitionsCreated.length ? ` (partitions ${storage.partitionsCreated.join(', ')})` : ''}`,
  });

  const t = config.tenant;
  const inserted = await v2.query(
    `INSERT INTO ${ident(config.schemas.v2)}.tenants (id, name, slug, plan, status)
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
    [t.id, t.name, t.slug, t.plan, t.status],
  );
  if (inserted.rowCount === 1) await auditEvent(ctx, 'tenant.created', { ...t });
  else {
    const existing = await v2.query(`SELECT id FROM ${ident(config.schemas.v2)}.tenants WHERE id = $1`, [
      t.id,
    ]);
    if (existing.rows.length === 0) {
      throw new TenantConflictError(t.id, t.slug);
    }
  }
  report({
    step: 'default-tenant',
    outcome: inserted.rowCount === 1 ? 'done' : 'unchanged',
    detail: inserted.rowCount === 1 ? `created tenant ${t.id} (${t.slug})` : `tenant ${t.id} already exists`,
  });

  return { steps, storage };
}
