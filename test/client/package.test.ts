import '../../lambdas/core/polyfills';
import { execFile } from 'node:child_process';
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { seedV1, testConfig } from '../support/fixtures';
import { prepared } from '../support/migration';
import { freshDatabases, type TestDatabases } from '../support/pg';
import { v2RowsOf } from './helpers';

const run = promisify(execFile);
const ROOT = join(__dirname, '..', '..');

/**
 * What a backend written in plain JavaScript does with the installed package: a TrafficRouter
 * over a parameter store, a DualWriter whose repair queue is the package's SqsQueue (over an
 * SQS client stand-in), one write with V2 up and one with V2 down, and a bad input.
 * `IMPORTS` is replaced by the ESM or CommonJS way of loading the package.
 */
const BACKEND = `IMPORTS
const sent = [];
const sqs = {
  async send(command) {
    sent.push(...command.input.Entries.map((e) => JSON.parse(e.MessageBody)));
    return { Successful: command.input.Entries.map((e) => ({ Id: e.Id })), Failed: [] };
  },
};
const store = { '/iot/v2-traffic-percentage': '100', '/iot/dual-write': 'on' };
const router = TrafficRouter.fromParameters(
  { get: async (name) => store[name], put: async () => undefined },
  { prefix: '/iot' },
);
(async () => {
  await router.start();
  const v1 = new Pool({ connectionString: process.env.V1_URL });
  const v2 = new Pool({ connectionString: process.env.V2_URL });
  const down = new Pool({ connectionString: process.env.V2_URL });
  await down.end();
  const options = { v1, router, repairQueue: new SqsQueue(sqs, 'https://sqs.test/repair'), tenantId: process.env.TENANT };
  const writer = new DualWriter({ ...options, v2 });
  const id = 'pkg_' + process.env.FLAVOR;
  const row = await writer.insert('users', { id, email: id + '@example.com', passwordHash: 'h', updatedAt: new Date() });
  const failures = [];
  const downWriter = new DualWriter({ ...options, v2: down, onV2Failure: (f) => failures.push(f.error.name) });
  await downWriter.update('users', id, { name: 'written while V2 was down' });
  let refused;
  try {
    await writer.insert('no_such_table', {});
  } catch (error) {
    refused = error.name;
  }
  router.stop();
  await Promise.all([v1.end(), v2.end()]);
  console.log(JSON.stringify({ id: row.id, route: router.route('any key'), tables: CLIENT_TABLES, sent, failures, refused }));
})().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
`;

const ESM_IMPORTS = `import pg from 'pg';
import { CLIENT_TABLES, DualWriter, TrafficRouter } from 'iot-v2-migration/client';
import { SqsQueue } from 'iot-v2-migration/sqs-queue';
const { Pool } = pg;`;

const CJS_IMPORTS = `const { Pool } = require('pg');
const { CLIENT_TABLES, DualWriter, TrafficRouter } = require('iot-v2-migration/client');
const { SqsQueue } = require('iot-v2-migration/sqs-queue');`;

/** A TypeScript backend (ESM, nodenext) type-checked against the package's declarations. */
const TYPED = `import { DualWriter, withMigration, type DualWriterOptions, type V1User } from 'iot-v2-migration/client';
import { SqsQueue } from 'iot-v2-migration/sqs-queue';
export async function insert(options: DualWriterOptions): Promise<V1User> {
  const user: V1User = await new DualWriter(options).insert('users', { id: 'u', email: 'e', passwordHash: 'h', updatedAt: new Date() });
  return user;
}
export const queue = (client: ConstructorParameters<typeof SqsQueue>[0]) => new SqsQueue(client, 'url');
export const extend = withMigration;
// @ts-expect-error: the table name is checked
export const wrong = (w: DualWriter) => w.insert('device_data', {});
`;

describe('the installable package (npm pack, installed into a plain Node.js project)', () => {
  let dbs: TestDatabases;
  let work: string;
  let app: string;
  let tenant: string;
  beforeAll(async () => {
    dbs = await freshDatabases('pkg');
    await seedV1(dbs.v1, { devices: 1, telemetry: 1 });
    const config = testConfig(dbs);
    await prepared(dbs, config);
    tenant = config.tenant.id;

    work = mkdtempSync(join(tmpdir(), 'iot-v2-pack-'));
    // `npm pack` runs the build (prepack): JavaScript and declarations into dist/.
    const packed = await run('npm', ['pack', '--json', '--pack-destination', work], {
      cwd: ROOT,
      maxBuffer: 16 * 1024 * 1024,
    });
    const [{ filename }] = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('['))) as {
      filename: string;
    }[];
    app = join(work, 'app');
    mkdirSync(join(app, 'node_modules'), { recursive: true });
    writeFileSync(
      join(app, 'package.json'),
      JSON.stringify({ name: 'backend', version: '1.0.0', private: true }),
    );
    // Offline: the package's declared dependencies are linked from this checkout, so npm installs the tarball without asking a registry; a
    // module the build needs but the package does not declare is not there to be found.
    const manifest = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
      dependencies: Record<string, string>;
    };
    const link = (dep: string) => {
      mkdirSync(dirname(join(app, 'node_modules', dep)), { recursive: true });
      symlinkSync(join(ROOT, 'node_modules', dep), join(app, 'node_modules', dep));
    };
    Object.keys(manifest.dependencies).forEach(link);
    await run(
      'npm',
      ['install', '--offline', '--no-audit', '--no-fund', '--ignore-scripts', join(work, filename)],
      { cwd: app },
    );
    // npm prunes what the backend's package.json does not name: its type packages come after.
    ['@types/node', '@types/pg'].forEach(link);
  }, 600_000);
  afterAll(async () => {
    if (work) rmSync(work, { recursive: true, force: true });
    await dbs?.drop();
  });

  it('ships the built client, its declarations and the CLI, and no TypeScript sources', async () => {
    const { stdout } = await run('tar', ['-tzf', readdirTarball(work)]);
    const files = stdout.trim().split('\n');
    expect(files).toEqual(
      expect.arrayContaining([
        'package/dist/client/index.js',
        'package/dist/client/index.d.ts',
        'package/dist/client/prisma.js',
        'package/dist/lambdas/adapters/aws/sqs-queue.js',
        'package/dist/bin/migrate.js',
        'package/client/README.md',
      ]),
    );
    // Our own code ships built; the bundled aws-local-stepfunctions (vendor/README.md) brings its
    // dependencies' files as published.
    const ours = files.filter((f) => !f.startsWith('package/node_modules/'));
    expect(ours.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))).toEqual([]);
    expect(files).toContain('package/node_modules/aws-local-stepfunctions/package.json');
    const installed = JSON.parse(
      readFileSync(join(app, 'node_modules', 'iot-v2-migration', 'package.json'), 'utf8'),
    ) as { bin: Record<string, string> };
    expect(installed.bin).toEqual({ migrate: 'dist/bin/migrate.js' });
  });

  it.each([
    ['mjs', ESM_IMPORTS],
    ['cjs', CJS_IMPORTS],
  ])('is imported and used from a plain .%s file', async (flavor, imports) => {
    const file = join(app, `backend.${flavor}`);
    writeFileSync(file, BACKEND.replace('IMPORTS', imports));
    const { stdout } = await run(process.execPath, [file], {
      cwd: app,
      env: { ...process.env, V1_URL: dbs.v1Url, V2_URL: dbs.v2Url, TENANT: tenant, FLAVOR: flavor },
    });
    const out = JSON.parse(stdout.trim().split('\n').pop()!);
    expect(out).toEqual({
      id: `pkg_${flavor}`,
      route: 'v2',
      tables: ['users', 'devices', 'telemetry', 'alerts'],
      sent: [{ type: 'repair-row', table: 'users', id: `pkg_${flavor}` }],
      failures: ['DualWriteV2Error'],
      refused: 'InvalidInputError',
    });
    expect(await v2RowsOf(dbs, 'users', `pkg_${flavor}`)).toEqual([
      expect.objectContaining({ email: `pkg_${flavor}@example.com`, tenant_id: tenant }),
    ]);
  });

  it('refuses deep imports that are not part of its interface', async () => {
    const probe = "try { require('iot-v2-migration/lambdas/core/errors') } catch (e) { console.log(e.code) }";
    const { stdout } = await run(process.execPath, ['-e', probe], { cwd: app });
    expect(stdout.trim()).toBe('ERR_PACKAGE_PATH_NOT_EXPORTED');
  });

  it('type-checks a TypeScript (nodenext) backend against its declarations', async () => {
    writeFileSync(join(app, 'backend.mts'), TYPED);
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    // skipLibCheck as a backend's tsconfig has it; the @ts-expect-error proves the types are not `any`.
    const args = [
      '--noEmit',
      '--strict',
      '--skipLibCheck',
      '--module',
      'nodenext',
      '--moduleResolution',
      'nodenext',
    ];
    const result = await run(process.execPath, [tsc, ...args, '--types', 'node', 'backend.mts'], {
      cwd: app,
    }).catch((error: { stdout: string }) => ({ stdout: error.stdout, failed: true }));
    expect(result.stdout).toBe('');
  });

  it('installs the ops CLI as a plain Node.js command', async () => {
    const { stdout } = await run(join(app, 'node_modules', '.bin', 'migrate'), ['help'], { cwd: app });
    expect(stdout).toMatch(/^usage: migrate <command>/);
  });
});

function readdirTarball(dir: string): string {
  const tarball = readdirSync(dir).find((f) => f.endsWith('.tgz'));
  if (!tarball) throw new Error(`no tarball in ${dir}`);
  return join(dir, tarball);
}
