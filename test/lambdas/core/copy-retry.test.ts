import { Client } from 'pg';
import { copyWindow, planBackfill, type BackfillDeps } from '../../../lambdas/core/backfill';
import { DEFAULT_THROTTLE, type ThrottleSettings } from '../../../lambdas/core/backfill/throttle';
import { workerBatchHandler, type WorkResult } from '../../../lambdas/core/worker';
import { preparedDatabases } from '../../support/migration';
import { suiteSetup } from '../../support/pg';

/** Thresholds no healthy test server crosses: only the fault holds the window back. */
const CALM: ThrottleSettings = { ...DEFAULT_THROTTLE, commitLatencyMs: 10_000, probeTimeoutMs: 30_000 };

/**
 * A failover or an administrator's `pg_terminate_backend` ends a worker's COPY session in the
 * middle of its window: the worker copies the window again within the same SQS delivery (no
 * redelivery, nothing reported back to the queue), after a backoff, and the window's rows land
 * once.
 */
describe('the worker, its COPY session terminated mid-window', () => {
  const suite = suiteSetup(async () => {
    const { dbs, config } = await preparedDatabases(
      'copy_retry',
      { devices: 10, telemetry: 3000, seed: 3 },
      {
        config: {
          batch: { telemetryWindowRows: 1000, entityWindowRows: 50, concurrency: 1, maxReceiveCount: 3 },
        },
      },
    );
    const deps: BackfillDeps = { v1: dbs.v1, v2: dbs.v2, config };
    await planBackfill(deps);
    // The parents first (users, devices), so that a telemetry window can land.
    const parents = await dbs.v2.query<{ id: string }>(
      `SELECT id FROM migration_control.windows WHERE table_name <> 'telemetry' ORDER BY seq`,
    );
    for (const w of parents.rows) await copyWindow(deps, Number(w.id));
    return { dbs, deps };
  });

  it('copies the window again within its delivery, after a backoff, and the rows land once', async () => {
    const { rows } = await suite.dbs.v2.query<{ id: string; expected: number }>(
      `SELECT id, expected_rows::int AS expected FROM migration_control.windows
        WHERE table_name = 'telemetry' ORDER BY seq LIMIT 1`,
    );
    const windowId = Number(rows[0].id);
    const expected = rows[0].expected;
    expect(expected).toBeGreaterThan(0);

    // The test holds V2's telemetry in SHARE mode: the window's COPY (ROW EXCLUSIVE) waits for
    // it, so the test knows the COPY session and ends it mid-window, with no timer racing it.
    const holder = new Client({ connectionString: suite.dbs.v2Url });
    // Looks from its own session: pg_stat_activity stays as it was for a whole transaction.
    const watcher = new Client({ connectionString: suite.dbs.v2Url });
    await Promise.all([holder.connect(), watcher.connect()]);
    const holderPid = (await holder.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    await holder.query('BEGIN');
    await holder.query('LOCK TABLE public.telemetry IN SHARE MODE');
    const sleeps: number[] = [];
    const retries: { attempt: number; error: Error }[] = [];
    const done: WorkResult[] = [];
    const failed: Error[] = [];
    const handler = workerBatchHandler(
      {
        ...suite.deps,
        throttle: CALM,
        retry: {
          baseMs: 200,
          sleep: (ms) => {
            sleeps.push(ms);
            return new Promise((resolve) => setTimeout(resolve, ms));
          },
          onRetry: (attempt, error) => retries.push({ attempt, error }),
        },
      },
      { onDone: (_, result) => done.push(result), onError: (_, error) => failed.push(error) },
    );
    const delivery = handler([
      { messageId: 'm-1', body: JSON.stringify({ type: 'copy-window', windowId }), receiveCount: 1 },
    ]);
    let terminated = 0;
    try {
      while (terminated === 0) {
        const waiting = await watcher.query<{ pid: number; query: string }>(
          `SELECT pid, query FROM pg_stat_activity WHERE $1::int = ANY (pg_blocking_pids(pid))`,
          [holderPid],
        );
        if (waiting.rows.length > 0) {
          expect(waiting.rows.map((r) => r.query)).toEqual([expect.stringMatching(/^COPY /)]);
          const ended = await watcher.query(`SELECT pg_terminate_backend($1)`, [waiting.rows[0].pid]);
          terminated = ended.rowCount ?? 0;
        } else await new Promise((resolve) => setTimeout(resolve, 20));
      }
    } finally {
      await holder.query('ROLLBACK');
      await Promise.all([holder.end(), watcher.end()]);
    }

    // One delivery, handled: nothing goes back to the queue.
    expect(await delivery).toEqual({ batchItemFailures: [] });
    expect(failed).toEqual([]);
    expect(retries).toHaveLength(1);
    expect(retries[0]).toMatchObject({ attempt: 1, error: { name: 'TransientDatabaseError' } });
    expect(retries[0].error.message).toMatch(/terminating connection due to administrator command/);
    // Jittered backoff: between half and all of the base pause before the second attempt.
    expect(sleeps).toHaveLength(1);
    expect(sleeps[0]).toBeGreaterThanOrEqual(100);
    expect(sleeps[0]).toBeLessThanOrEqual(200);
    expect(done).toEqual([
      expect.objectContaining({ type: 'copy-window', windowId, attempts: 2, rowsCopied: expected }),
    ]);

    const window = await suite.dbs.v2.query(
      `SELECT status, attempts, rows_copied::int AS copied FROM migration_control.windows WHERE id = $1`,
      [windowId],
    );
    expect(window.rows[0]).toEqual({ status: 'done', attempts: 2, copied: expected });
    // Every row of the window once: as many rows as V1's window holds, no legacy id twice.
    const landed = await suite.dbs.v2.query(
      `SELECT count(*)::int AS n, count(DISTINCT legacy_id)::int AS ids FROM public.telemetry`,
    );
    expect(landed.rows[0]).toEqual({ n: expected, ids: expected });
  });
});
