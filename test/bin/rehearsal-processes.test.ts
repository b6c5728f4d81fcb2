import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * The rehearsal and the ops CLI as processes, as a user runs them: how they end (signals, a
 * broken pipe), what they leave in the temporary directory, and a database kept with
 * --keep-db that `migrate … --local` continues from.
 */
const ROOT = join(__dirname, '..', '..');

let work: string;
beforeAll(() => {
  // Short names: PostgreSQL's socket path in the data folder must stay under 108 characters.
  work = mkdtempSync(join(tmpdir(), 'rp-'));
  // Its TMPDIRs hold the embedded servers' data, which the postgres user must reach (as root).
  chmodSync(work, 0o755);
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** A fresh directory to be a process's TMPDIR, reachable by the postgres user as /tmp is. */
function freshTmp(): string {
  const dir = mkdtempSync(join(work, 't-'));
  chmodSync(dir, 0o1777);
  return dir;
}

interface Started {
  child: ChildProcess;
  lines: string[];
  /** Resolves once a line of standard output matches. */
  waitFor(pattern: RegExp): Promise<void>;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function start(file: string, args: string[], tmp: string): Started {
  const child = spawn(process.execPath, ['--import', 'tsx', file, ...args], {
    cwd: ROOT,
    env: { ...process.env, TMPDIR: tmp, TSX_DISABLE_CACHE: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const waiters: { pattern: RegExp; resolve: () => void }[] = [];
  let buffered = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    buffered += chunk;
    const parts = buffered.split('\n');
    buffered = parts.pop()!;
    for (const line of parts) {
      lines.push(line);
      for (const w of waiters.filter((x) => x.pattern.test(line))) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    }
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => lines.push(`stderr: ${chunk}`));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  return {
    child,
    lines,
    exit,
    waitFor: (pattern) =>
      lines.some((l) => pattern.test(l))
        ? Promise.resolve()
        : new Promise<void>((resolve, reject) => {
            waiters.push({ pattern, resolve });
            void exit.then(() => reject(new Error(`exited before ${pattern}:\n${lines.join('\n')}`)));
          }),
  };
}

/** The embedded database folder of a running rehearsal, and its postmaster's process id. */
function runningDatabase(tmp: string): { folder: string; pid: number } {
  const [folder] = readdirSync(tmp).filter((name) => name.startsWith('iot-rehearsal-'));
  expect(folder).toBeDefined();
  const pidFile = join(tmp, folder, 'pg', 'data', 'postmaster.pid');
  return { folder, pid: Number(readFileSync(pidFile, 'utf8').split('\n')[0]) };
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
};

const rehearsal = (tmp: string, telemetry: number, ...extra: string[]) =>
  start(
    'bin/rehearse.ts',
    [
      '--devices',
      '10',
      '--telemetry',
      String(telemetry),
      '--bake-seconds',
      '0',
      '--report-dir',
      join(work, 'reports'),
      ...extra,
    ],
    tmp,
  );

describe('a rehearsal that is stopped leaves no database behind', () => {
  it.each<[string, (s: Started) => void, number]>([
    ['SIGTERM', (s) => s.child.kill('SIGTERM'), 143],
    ['SIGINT (Ctrl-C)', (s) => s.child.kill('SIGINT'), 130],
    // SIGPIPE is what a write to a connection the server closed raises (a COPY terminated under
    // --kill-workers): ignored, as Node does, so the run goes on until SIGTERM ends it.
    [
      'SIGPIPE, then SIGTERM',
      (s) => {
        s.child.kill('SIGPIPE');
        setTimeout(() => s.child.kill('SIGTERM'), 1_000);
      },
      143,
    ],
    // The reader of its output goes away (`npm run rehearse | head`): its next write fails with EPIPE.
    ['a broken pipe', (s) => s.child.stdout!.destroy(), 141],
  ])(
    '%s: the embedded database folder is removed and its server stopped',
    async (_how, stop, status) => {
      const tmp = freshTmp();
      // Stopped while it generates V1: the server runs and its data folder is filling up.
      const run = rehearsal(tmp, 2_000_000);
      await run.waitFor(/^V1 is empty: generating/);
      const db = runningDatabase(tmp);
      expect(alive(db.pid)).toBe(true);

      stop(run);
      const exit = await run.exit;

      expect(exit.code).toBe(status);
      expect(readdirSync(tmp)).toEqual([]);
      expect(alive(db.pid)).toBe(false);
    },
    180_000,
  );
});

describe('a rehearsal whose temporary folder is too deep for PostgreSQL', () => {
  it('fails with EmbeddedPostgresError saying what to change, and leaves nothing', async () => {
    const tmp = join(
      freshTmp(),
      'a-folder-name-long-enough-to-push-the-socket-path-of-postgresql-past-its-limit',
    );
    mkdirSync(tmp);
    chmodSync(tmp, 0o1777);
    const run = rehearsal(tmp, 1000);

    expect((await run.exit).code).toBe(1);
    expect(run.lines.join('\n')).toMatch(
      /EmbeddedPostgresError: .* did not start: its socket path would have \d+ characters, more than the 107 .*use a shorter folder/,
    );
    expect(readdirSync(tmp)).toEqual([]);
  }, 60_000);
});

describe('--keep-db, then migrate … --local', () => {
  it('keeps the rehearsed migration where `migrate --local` finds it, and reset removes it', async () => {
    const tmp = freshTmp();
    const dir = join(work, 'kept');
    const kept = rehearsal(tmp, 3000, '--keep-db', '--local-dir', dir, '--window-rows', '1000');
    const rehearsed = await kept.exit;
    expect({ code: rehearsed.code, output: kept.lines.slice(-3) }).toMatchObject({ code: 0 });
    expect(kept.lines.join('\n')).toContain(
      `Database kept in ${dir}: continue with \`npm run migrate -- status --local --local-dir ${dir}\``,
    );
    expect(readdirSync(tmp)).toEqual([]);
    expect(existsSync(join(dir, 'pg', 'data', 'PG_VERSION'))).toBe(true);

    const status = start('bin/migrate.ts', ['status', '--local', '--local-dir', dir, '--json'], tmp);
    expect((await status.exit).code).toBe(0);
    const result = JSON.parse(status.lines[status.lines.length - 1]) as {
      output: { phases: { phase: string; status: string }[] };
      trafficPercentage: number;
    };
    expect(result.trafficPercentage).toBe(100);
    expect(result.output.phases.map((p) => p.status)).toEqual(['done', 'done', 'done', 'done', 'done']);
    // The kept V1 was found, not generated again.
    expect(status.lines.join('\n')).not.toMatch(/V1 is empty/);

    const again = rehearsal(tmp, 3000, '--keep-db', '--local-dir', dir);
    expect((await again.exit).code).toBe(2);
    expect(again.lines.join('\n')).toMatch(
      /InvalidInputError: .*--keep-db: .* already holds a local migration/,
    );

    const reset = start('bin/migrate.ts', ['reset', '--local', '--local-dir', dir], tmp);
    expect((await reset.exit).code).toBe(0);
    expect(existsSync(dir)).toBe(false);
    expect(readdirSync(tmp)).toEqual([]);
  }, 300_000);
});
