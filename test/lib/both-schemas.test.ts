import { backendSettings, SyntheticBackend, type LoadStats } from '../../bin/rehearsal/load';
import { LocalQueue } from '../../lambdas/adapters/local/local-queue';
import { LocalStateMachines } from '../../lambdas/adapters/local/local-state-machines';
import { startLocalWorkers, type LocalWorkers } from '../../lambdas/adapters/local/local-workers';
import { MemoryParameters } from '../../lambdas/adapters/local/memory-parameters';
import type { MigrationConfig } from '../../lambdas/core/config';
import type { OrchestratorDeps } from '../../lambdas/core/orchestrator';
import { parameterNames } from '../../lambdas/ports/parameters';
import { synthesizeDefinitions, type StateMachineDefinitions } from '../../lib/local-definitions';
import { quickCutover, seedV1, testConfig } from '../support/fixtures';
import { expectAllInSync } from '../support/in-sync';
import { localOrchestratorDeps } from '../support/migration';
import { freshDatabases, type TestDatabases } from '../support/pg';

/**
 * pgroll's check, for this migration's expand/contract: after each phase the state machines
 * run, both schemas still take the backend's writes. The backend is the rehearsal's synthetic
 * one (its V1 Prisma client through withMigration, its router on the same parameters); each
 * phase gets a fresh backend, so its router starts from what the phase set. Until the write
 * switch, every write of its mix lands in V1 (the old schema) and, once dual-write is on, the
 * same row lands in V2 (the new schema) with no V2 failure; after the switch the writes go to V2
 * first and every one reaches V1. The tables are compared as the verifier compares them.
 */
const names = parameterNames('/iot-migration');
const fastWaits = { waits: { '*': 20 }, retryMs: 10 };

describe('both schemas take the backend writes after each phase', () => {
  let definitions: StateMachineDefinitions;
  let dbs: TestDatabases;
  let config: MigrationConfig;
  let parameters: MemoryParameters;
  let workers: LocalWorkers;
  let deps: OrchestratorDeps;

  beforeAll(async () => {
    definitions = synthesizeDefinitions();
    dbs = await freshDatabases('both');
    await seedV1(dbs.v1, { devices: 8, telemetry: 800, seed: 31 });
    config = testConfig(dbs, {
      batch: { telemetryWindowRows: 400, entityWindowRows: 4, concurrency: 2, maxReceiveCount: 3 },
      cutover: quickCutover([50, 100]),
    });
    parameters = new MemoryParameters({
      [names.trafficPercentage]: '0',
      [names.dualWrite]: 'off',
      [names.writePrimary]: 'v1',
    });
    workers = startLocalWorkers({ v1: dbs.v1, v2: dbs.v2, config });
    deps = localOrchestratorDeps(dbs, config, parameters, workers.queue);
  });
  afterAll(async () => {
    await workers?.stop();
    await dbs?.drop();
  });

  const run = (machine: 'migration' | 'cutover', input: Record<string, unknown>) =>
    new LocalStateMachines(definitions, deps, fastWaits).run(machine, input);

  /** A fresh backend on the parameters as they are now runs `operations` of its mix. */
  async function backendWrites(operations: number): Promise<LoadStats> {
    const backend = new SyntheticBackend(dbs.v1, dbs.v2, parameters, {
      perSecond: 100,
      ...backendSettings(config),
      repairs: new LocalQueue({ visibilityTimeoutMs: 30_000, maxReceiveCount: 5, concurrency: 1 }),
    });
    await backend.runOperations(operations);
    return backend.stop();
  }

  const v1Alerts = async () =>
    (await dbs.v1.query<{ n: number }>(`SELECT count(*)::int AS n FROM alerts WHERE id LIKE 'rehearsal_%'`))
      .rows[0].n;

  it('after Phase 1 (V2 created, dual-write off): V1 takes every write, V2 is left alone', async () => {
    expect((await run('migration', { action: 'advance', through: 'PREPARE' })).status).toBe('SUCCEEDED');
    const v2Before = (await dbs.v2.query<{ n: number }>('SELECT count(*)::int AS n FROM alerts')).rows[0].n;
    // Two rounds of the mix: every write kind of it, alerts created among them.
    const stats = await backendWrites(72);
    expect(stats).toMatchObject({ writes: 24, errors: 0, v2Failures: 0, readsFromV2: 0 });
    expect(await v1Alerts()).toBeGreaterThan(0);
    expect((await dbs.v2.query<{ n: number }>('SELECT count(*)::int AS n FROM alerts')).rows[0].n).toBe(
      v2Before,
    );
  });

  it.each([
    ['Phase 2 (dual-write on, backfill done)', 'BACKFILL'],
    ['Phase 3 (verified)', 'VERIFY'],
  ])('after %s: V1 takes every write and V2 the same rows', async (_, through) => {
    expect((await run('migration', { action: 'advance', through })).status).toBe('SUCCEEDED');
    expect(parameters.entries()[names.dualWrite]).toBe('on');
    const before = await v1Alerts();
    const stats = await backendWrites(72);
    expect(stats).toMatchObject({ writes: 24, errors: 0, v2Failures: 0 });
    expect(await v1Alerts()).toBeGreaterThan(before);
    await expectAllInSync(dbs, config);
  });

  it('after Phase 4 (reads on V2): V1 takes every write and V2 the same rows, reads go to V2', async () => {
    expect((await run('cutover', { action: 'run' })).status).toBe('SUCCEEDED');
    expect(parameters.entries()[names.trafficPercentage]).toBe('100');
    const stats = await backendWrites(72);
    expect(stats).toMatchObject({ writes: 24, errors: 0, v2Failures: 0, readsFromV2: 48 });
    await expectAllInSync(dbs, config);
  });

  it('after the write switch (V2 the write primary): V2 takes every write first, and V1 every one of them', async () => {
    const switched = await run('cutover', { action: 'switch-writes' });
    expect([switched.status, switched.cause]).toEqual(['SUCCEEDED', undefined]);
    expect(parameters.entries()[names.writePrimary]).toBe('v2');
    const stats = await backendWrites(48);
    expect(stats).toMatchObject({
      writes: 16,
      writesV2First: 16,
      errors: 0,
      v2Failures: 0,
      rowsMissingInV1: 0,
    });
    expect(stats.rowsInsertedV2First).toBeGreaterThan(0);
    await expectAllInSync(dbs, config);
  });
});
