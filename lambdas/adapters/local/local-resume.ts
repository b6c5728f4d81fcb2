import type { Pool } from 'pg';
import type { MigrationConfig } from '../../core/config';
import { controlSchema } from '../../core/db';
import { ensureControlSchema } from '../../core/migration-state';
import type { ParameterPort } from '../../ports/parameters';
import { localExecutions } from './local-executions';

/**
 * What lets a local migration on given databases (`npm run rehearse -- --v1-url … --v2-url …`)
 * be run again after its process died, and go on from where it was: the switches kept with the
 * migration's state in V2, and the work the dead process had queued in memory given back.
 */

/**
 * The parameter port in the control schema's `local_parameters` table: the stand-in of SSM for a
 * local migration whose state lives in V2, so that a run after a crash finds the traffic level
 * and dual-write where the last one left them. The control schema is deployed on creation.
 */
export class ControlSchemaParameters implements ParameterPort {
  private constructor(
    private readonly v2: Pool,
    private readonly table: string,
  ) {}

  /** Deploys the control schema when missing, and sets `initial` values that are not set yet. */
  static async open(
    ctx: { v2: Pool; config: MigrationConfig },
    initial: Record<string, string> = {},
  ): Promise<ControlSchemaParameters> {
    await ensureControlSchema(ctx);
    const store = new ControlSchemaParameters(ctx.v2, `${controlSchema(ctx.config)}.local_parameters`);
    const names = Object.keys(initial);
    if (names.length > 0) {
      await ctx.v2.query(
        `INSERT INTO ${store.table} (name, value) SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT (name) DO NOTHING`,
        [names, names.map((n) => initial[n])],
      );
    }
    return store;
  }

  async get(name: string): Promise<string | undefined> {
    const { rows } = await this.v2.query<{ value: string }>(
      `SELECT value FROM ${this.table} WHERE name = $1`,
      [name],
    );
    return rows[0]?.value;
  }

  async put(name: string, value: string): Promise<void> {
    await this.v2.query(
      `INSERT INTO ${this.table} (name, value) VALUES ($1, $2)
       ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()`,
      [name, value],
    );
  }
}

export interface RequeuedWork {
  windows: number;
  slices: number;
}

/**
 * Gives back the work a dead local process had in its in-memory queue: backfill windows and
 * verification slices marked queued (or a window marked running) go back to pending, so the next
 * pump or poll sends them again (copies and checks are idempotent). Done only while no live run
 * holds the migration lock (a second command beside a running one takes nothing from it), and
 * audited as `local.work-requeued`.
 */
export async function requeueLostWork(ctx: { v2: Pool; config: MigrationConfig }): Promise<RequeuedWork> {
  const ctl = controlSchema(ctx.config);
  const exists = await ctx.v2.query<{ t: string | null }>('SELECT to_regclass($1) AS t', [
    `${ctx.config.schemas.control}.windows`,
  ]);
  if (!exists.rows[0].t) return { windows: 0, slices: 0 };
  const lock = await ctx.v2.query<{ holder: string | null }>(
    `SELECT holder FROM ${ctl}.migration_lock WHERE id = 1`,
  );
  const holder = lock.rows[0]?.holder;
  if (holder && (await localExecutions.holderState(holder)).alive !== false) return { windows: 0, slices: 0 };
  const windows = await ctx.v2.query(
    `UPDATE ${ctl}.windows SET status = 'pending' WHERE status IN ('queued', 'running')`,
  );
  const slices = await ctx.v2.query(
    `UPDATE ${ctl}.verification_slices SET status = 'pending' WHERE status = 'queued'`,
  );
  const requeued = { windows: windows.rowCount ?? 0, slices: slices.rowCount ?? 0 };
  if (requeued.windows + requeued.slices > 0) {
    await ctx.v2.query(
      `INSERT INTO ${ctl}.audit_log (actor, action, details) VALUES ('local-runner', 'local.work-requeued', $1)`,
      [JSON.stringify({ ...requeued, deadHolder: holder ?? null })],
    );
  }
  return requeued;
}
