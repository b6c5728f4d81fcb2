import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { existingConfigInput } from '../lib/helpers';

const ROOT = join(__dirname, '..', '..');

function run(command: string, args: string[], env: Record<string, string> = {}) {
  return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(
      command,
      args,
      { cwd: ROOT, env: { ...process.env, TSX_DISABLE_CACHE: '1', ...env }, timeout: 120_000 },
      (error, stdout, stderr) => resolve({ code: error ? Number(error.code) : 0, stdout, stderr }),
    );
  });
}

describe('`cdk synth` with a configuration the stack refuses', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'app-config-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('fails with the named error, the file and every bad field, and no stack trace', async () => {
    const file = join(dir, 'prod.json');
    const { snapshot: _omitted, ...withoutSnapshot } = existingConfigInput({ worker: { concurrency: 65 } });
    writeFileSync(file, JSON.stringify(withoutSnapshot));

    // The app as cdk.json runs it, minus tsx's command line (which leaves an IPC folder in TMPDIR).
    const synth = await run('npx', [
      'cdk',
      'synth',
      '--no-notices',
      '--app',
      `${process.execPath} --import tsx bin/app.ts`,
      '-o',
      join(dir, 'cdk.out'),
      '-c',
      `configFile=${file}`,
    ]);

    expect(synth.code).not.toBe(0);
    const lines = synth.stderr.split('\n');
    expect(lines).toContain(`ConfigError: Invalid stack configuration (${file}):`);
    expect(lines).toContain('  worker.concurrency: Too big: expected number to be <=64');
    expect(lines.some((l) => /^ {2}snapshot: is required unless demo: true/.test(l))).toBe(true);
    expect(synth.stderr).not.toMatch(/^\s+at /m);
    expect(synth.stderr).not.toMatch(/\bthrow\b|\^/);
    // Nothing was synthesized.
    expect(readdirSync(join(dir, 'cdk.out')).filter((f) => f.endsWith('.template.json'))).toEqual([]);
  }, 180_000);

  it('names a configuration file that is not JSON', async () => {
    const file = join(dir, 'broken.json');
    writeFileSync(file, '{ "demo": true,');

    const app = await run(process.execPath, ['--import', 'tsx', 'bin/app.ts'], {
      CDK_CONTEXT_JSON: JSON.stringify({ configFile: file }),
      CDK_OUTDIR: join(dir, 'never'),
    });

    expect(app.code).toBe(1);
    expect(app.stderr).toMatch(
      new RegExp(`^ConfigError: Invalid configuration:\\n {2}configFile: ${file} is not valid JSON`),
    );
    expect(app.stderr).not.toMatch(/^\s+at /m);
  }, 60_000);
});
