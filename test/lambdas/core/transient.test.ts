import { Pool } from 'pg';
import { LocalAlarms } from '../../../lambdas/adapters/local/local-alarms';
import { MemoryParameters } from '../../../lambdas/adapters/local/memory-parameters';
import { isConnectionFailure } from '../../../lambdas/core/db';
import { RETRYABLE_TASK_ERROR, originalFailure, taskFailure } from '../../../lambdas/core/errors';
import { orchestrate, type OrchestratorDeps } from '../../../lambdas/core/orchestrator';
import { RETRYABLE_ERRORS } from '../../../lib/constructs/state-machines';
import { testConfig } from '../../support/fixtures';
import { testBackup } from '../../support/migration';
import { freshDatabases, type TestDatabases } from '../../support/pg';

/**
 * A task that cannot get a connection (pg's pool waits in vain on a busy server, as a rehearsal
 * on an overloaded machine showed) fails with TransientDatabaseError, a retryable error that the
 * task hands Step Functions as RetryableTaskError, the one name the states' Retry matches,
 * instead of a bare `Error` that ends the execution. A statement error keeps its name.
 */
describe('orchestrator tasks on a database that cannot give a connection', () => {
  let dbs: TestDatabases;
  const ACTOR = 'arn:aws:states:eu-west-1:123456789012:execution:Migration:transient';
  beforeAll(async () => {
    dbs = await freshDatabases('transient');
  });
  afterAll(async () => {
    await dbs?.drop();
  });

  const deps = (v1: Pool, v2: Pool): OrchestratorDeps => ({
    v1,
    v2,
    config: testConfig(dbs),
    parameters: new MemoryParameters({}),
    alarms: new LocalAlarms(),
    queue: { sendAll: (bodies) => Promise.resolve({ sent: bodies.length, calls: 1 }) },
    backup: testBackup(dbs),
  });

  it('reports a pool connect timeout as TransientDatabaseError, a name the states retry', async () => {
    const busy = (url: string) => new Pool({ connectionString: url, max: 1, connectionTimeoutMillis: 100 });
    const v1 = busy(dbs.v1Url);
    const v2 = busy(dbs.v2Url);
    // Every connection of both pools is taken, as on a server at its limit.
    const held = [await v1.connect(), await v2.connect()];
    try {
      const failure = await orchestrate(deps(v1, v2), { task: 'status', actor: ACTOR }).then(
        () => undefined,
        (e: unknown) => e as Error & { cause?: unknown },
      );
      expect(failure).toMatchObject({ name: 'TransientDatabaseError', retryable: true });
      expect(failure?.message).toMatch(/timeout exceeded when trying to connect/);
      expect(isConnectionFailure(failure?.cause)).toBe(true);
      // What Step Functions sees: the one retried name, the original name kept for the failure path.
      const thrown = taskFailure(failure) as Error;
      expect(thrown.name).toBe(RETRYABLE_TASK_ERROR);
      expect(RETRYABLE_ERRORS).toContain(RETRYABLE_TASK_ERROR);
      expect(originalFailure(thrown.name, thrown.message)).toMatchObject({ error: 'TransientDatabaseError' });
    } finally {
      held.forEach((c) => c.release());
      await Promise.all([v1.end(), v2.end()]);
    }
  });

  it('leaves a statement error and a bad event as they are (not retried)', async () => {
    const missing = new Pool({ connectionString: dbs.v2Url.replace(/\/[^/]+$/, '/no_such_database_x') });
    try {
      const refused = await orchestrate(deps(missing, missing), { task: 'status', actor: ACTOR }).catch(
        (e: unknown) => e as Error,
      );
      expect(refused).toBeInstanceOf(Error);
      expect((refused as Error).name).not.toBe('TransientDatabaseError');
      expect((taskFailure(refused) as Error).name).not.toBe(RETRYABLE_TASK_ERROR);
    } finally {
      await missing.end();
    }
    await expect(orchestrate(deps(dbs.v1, dbs.v2), { task: 'status' })).rejects.toMatchObject({
      name: 'InvalidInputError',
    });
  });
});
