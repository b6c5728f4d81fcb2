import { spawn, spawnSync, execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { LocalPostgresError } from '../../core/errors';

/** A throw-away PostgreSQL server on loopback (tests, benchmarks, the local rehearsal). */
export interface LocalPostgres {
  port: number;
  user: string;
  password: string;
  dataDir: string;
  /** What this server is, e.g. `embedded PostgreSQL 17.10`. */
  label: string;
  /** A URL for the named database on this server. */
  url(database: string): string;
  /** Creates a fresh, empty database. */
  createDatabase(name: string): Promise<void>;
  dropDatabase(name: string): Promise<void>;
  stop(): Promise<void>;
}

/** Asks the kernel for a free TCP port on loopback (never assumes 5432 is free). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** The unprivileged account a server runs as when this process is root (PostgreSQL refuses root). */
export interface Account {
  name: string;
  uid: number;
  gid: number;
}

const isRoot = () => process.getuid?.() === 0;

function lookupAccount(name: string): Account | undefined {
  try {
    const uid = Number(execFileSync('id', ['-u', name], { encoding: 'utf8', stdio: 'pipe' }).trim());
    const gid = Number(execFileSync('id', ['-g', name], { encoding: 'utf8', stdio: 'pipe' }).trim());
    return { name, uid, gid };
  } catch {
    return undefined;
  }
}

/**
 * Under root, the `postgres` account the servers run as (created once if the system has none,
 * as Debian's PostgreSQL package would); undefined when this process is not root.
 */
export function serverAccount(): Account | undefined {
  if (!isRoot()) return undefined;
  const found = lookupAccount('postgres');
  if (found) return found;
  try {
    spawnSync('groupadd', ['--system', 'postgres'], { stdio: 'pipe' });
    execFileSync('useradd', ['--system', '-g', 'postgres', '-M', '-s', '/bin/sh', 'postgres'], {
      stdio: 'pipe',
    });
  } catch (cause) {
    throw new LocalPostgresError(
      'PostgreSQL refuses to run as root, and no `postgres` account exists or could be created; create one (useradd --system postgres) or run as another user',
      {},
      { cause },
    );
  }
  const created = lookupAccount('postgres');
  if (!created) throw new LocalPostgresError('the `postgres` account could not be created');
  return created;
}

/** Whether `account` (or this process, when none) may read and execute `path` and every folder above it. */
export function canExecute(path: string, account: Account | undefined): boolean {
  const result = spawnSync('/bin/sh', ['-c', 'test -x "$1" && test -r "$1"', 'sh', path], {
    stdio: 'ignore',
    ...(account ? { uid: account.uid, gid: account.gid } : {}),
  });
  return result.status === 0;
}

/** A UTF-8 locale initdb can use here (C.UTF-8 on most Linux systems), or plain C. */
function clusterLocale(): string {
  try {
    const all = execFileSync('locale', ['-a'], { encoding: 'utf8', stdio: 'pipe' }).split(/\r?\n/);
    if (all.includes('C.UTF-8') || all.includes('C.utf8')) return 'C.UTF-8';
  } catch {
    // no `locale` program: C below
  }
  return 'C';
}

export interface ClusterOptions {
  /** Folder holding `initdb` and `postgres`. */
  binDir: string;
  /** What this server is, for messages. */
  label: string;
  /** Extra `-c name=value` settings. */
  settings?: Record<string, string | number>;
  port?: number;
  log?: (line: string) => void;
  /** Where the temporary data folder goes (default: the system's temp folder). */
  parentDir?: string;
  /** Use this folder for the cluster (created if missing) instead of a new temporary one. */
  dir?: string;
  /** Keep `dir` when the server stops: a later start on it finds its databases again. */
  keep?: boolean;
}

/** Quotes a database name (local use only: names come from this code or the harness). */
const q = (name: string) => `"${name.replace(/"/g, '""')}"`;

function run(binary: string, args: string[], account: Account | undefined, label: string): void {
  const result = spawnSync(binary, args, {
    encoding: 'utf8',
    env: { ...process.env, LC_MESSAGES: 'C', LC_ALL: '' },
    ...(account ? { uid: account.uid, gid: account.gid } : {}),
  });
  if (result.status !== 0) {
    const reason = result.error ? result.error.message : (result.stderr || result.stdout).trim();
    throw new LocalPostgresError(`${label}: ${binary} failed: ${reason}`, { binary });
  }
}

/**
 * Starts a throw-away PostgreSQL cluster: `initdb` into a new temporary folder, then `postgres`
 * on a free loopback port, as the `postgres` account when this process is root. Durability is
 * traded for speed (fsync off): such a server holds test and rehearsal data only. The server is
 * stopped and its folder removed by `stop()`, or when this process exits.
 */
export async function startCluster(options: ClusterOptions): Promise<LocalPostgres> {
  const account = serverAccount();
  const postgres = join(options.binDir, 'postgres');
  const initdb = join(options.binDir, 'initdb');
  if (!canExecute(postgres, account) || !canExecute(initdb, account)) {
    throw new LocalPostgresError(
      `${options.label}: ${account ? `the ${account.name} account` : 'this user'} cannot run ${postgres}` +
        (account
          ? ' (a folder above it is closed to other users: move the checkout somewhere other users can enter, or chmod o+x the folders above it)'
          : ''),
      { binary: postgres },
    );
  }
  const root = options.dir ?? mkdtempSync(join(options.parentDir ?? tmpdir(), 'iot-migration-pg-'));
  if (options.dir) mkdirSync(root, { recursive: true });
  const dataDir = join(root, 'data');
  const existing = options.keep === true && existsSync(join(dataDir, 'PG_VERSION'));
  const user = 'postgres';
  const password = 'local-only';
  const log = options.log ?? (() => undefined);
  try {
    chmodSync(root, 0o700);
    if (account) {
      chownSync(root, account.uid, account.gid);
      if (!canExecute(root, account)) {
        throw new LocalPostgresError(
          `${options.label}: the ${account.name} account cannot enter ${root}; set TMPDIR to a folder other users can enter (e.g. /tmp)`,
          { dataDir: root },
        );
      }
    }
    const pwfile = join(root, 'pwfile');
    writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
    if (account) chownSync(pwfile, account.uid, account.gid);
    if (!existing)
      run(
        initdb,
        [
          `--pgdata=${dataDir}`,
          `--username=${user}`,
          `--pwfile=${pwfile}`,
          '--auth=scram-sha-256',
          '--encoding=UTF8',
          `--locale=${clusterLocale()}`,
          '--lc-messages=C',
          '--no-sync',
        ],
        account,
        options.label,
      );
    rmSync(pwfile, { force: true });

    let lastError: unknown;
    for (let attempt = 1; attempt <= 3; attempt++) {
      const port = options.port ?? (await freePort());
      try {
        const child = await launch(postgres, dataDir, root, port, options, account, log);
        return handle(child, {
          port,
          user,
          password,
          root,
          dataDir,
          label: options.label,
          keep: options.keep === true,
        });
      } catch (error) {
        lastError = error;
        // Another process took the port between the probe and the start: try another one.
        if (options.port || !/could not bind|Address already in use/i.test((error as Error).message)) break;
      }
    }
    throw lastError;
  } catch (error) {
    if (!options.keep) rmSync(root, { recursive: true, force: true });
    throw error;
  }
}

async function launch(
  postgres: string,
  dataDir: string,
  socketDir: string,
  port: number,
  options: ClusterOptions,
  account: Account | undefined,
  log: (line: string) => void,
): Promise<ChildProcess> {
  const settings: Record<string, string | number> = {
    listen_addresses: '127.0.0.1',
    unix_socket_directories: socketDir,
    fsync: 'off',
    synchronous_commit: 'off',
    full_page_writes: 'off',
    max_connections: 200,
    shared_buffers: '512MB',
    max_wal_size: '4GB',
    ...options.settings,
  };
  const args = ['-D', dataDir, '-p', String(port)];
  for (const [name, value] of Object.entries(settings)) args.push('-c', `${name}=${value}`);
  const child = spawn(postgres, args, {
    env: { ...process.env, LC_MESSAGES: 'C', LC_ALL: '' },
    stdio: ['ignore', 'ignore', 'pipe'],
    ...(account ? { uid: account.uid, gid: account.gid } : {}),
  });
  const tail: string[] = [];
  await new Promise<void>((resolve, reject) => {
    const onExit = (code: number | null, signal: string | null) =>
      reject(
        new LocalPostgresError(
          `${options.label} exited while starting (code ${code}, signal ${signal}): ${tail.join('').trim().slice(-2000)}`,
          { port },
        ),
      );
    child.once('error', (error) =>
      reject(
        new LocalPostgresError(
          `${options.label}: cannot run ${postgres}: ${error.message}`,
          {},
          { cause: error },
        ),
      ),
    );
    child.once('exit', onExit);
    child.stderr?.on('data', (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      log(text);
      tail.push(text);
      if (tail.length > 40) tail.shift();
      if (text.includes('ready to accept connections')) {
        child.off('exit', onExit);
        resolve();
      }
    });
  });
  return child;
}

function handle(
  child: ChildProcess,
  s: {
    port: number;
    user: string;
    password: string;
    root: string;
    dataDir: string;
    label: string;
    keep: boolean;
  },
): LocalPostgres {
  // Keep draining the server's log so it never blocks on a full pipe.
  child.stderr?.resume();
  const onExit = () => {
    if (child.exitCode === null) child.kill('SIGINT');
  };
  process.once('exit', onExit);
  const admin = async <T>(fn: (c: Client) => Promise<T>): Promise<T> => {
    const client = new Client({
      host: '127.0.0.1',
      port: s.port,
      user: s.user,
      password: s.password,
      database: 'postgres',
    });
    await client.connect();
    try {
      return await fn(client);
    } finally {
      await client.end();
    }
  };
  let stopped = false;
  return {
    port: s.port,
    user: s.user,
    password: s.password,
    dataDir: s.dataDir,
    label: s.label,
    url: (database) =>
      `postgres://${s.user}:${s.password}@127.0.0.1:${s.port}/${encodeURIComponent(database)}`,
    createDatabase: (name) =>
      admin(async (c) => {
        await c.query(`CREATE DATABASE ${q(name)}`);
      }),
    dropDatabase: (name) =>
      admin(async (c) => {
        await c.query(`DROP DATABASE IF EXISTS ${q(name)} WITH (FORCE)`);
      }),
    stop: async () => {
      if (stopped) return;
      stopped = true;
      process.off('exit', onExit);
      if (child.exitCode === null && child.signalCode === null) {
        await new Promise<void>((resolve) => {
          const killer = setTimeout(() => child.kill('SIGKILL'), 15_000);
          child.once('exit', () => {
            clearTimeout(killer);
            resolve();
          });
          // Fast shutdown: disconnects sessions, no checkpoint wait for data nobody keeps.
          child.kill('SIGINT');
        });
      }
      if (!s.keep) rmSync(s.root, { recursive: true, force: true });
    },
  };
}
