import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';

const ROOT = join(__dirname, '..', '..');
const SCHEMA = join(ROOT, 'prisma', 'v1', 'schema.prisma');
const COMMITTED = join(ROOT, 'prisma', 'v1', 'generated');

function files(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)))
    .sort();
}

describe('the committed V1 Prisma Client (prisma/v1/generated)', () => {
  it('is what `prisma generate` makes of prisma/v1/schema.prisma with the locked Prisma version', async () => {
    const work = mkdtempSync(join(tmpdir(), 'iot-v2-prisma-'));
    try {
      copyFileSync(SCHEMA, join(work, 'schema.prisma'));
      // Offline: generate never runs the schema engine, but the CLI wants one named.
      await promisify(execFile)(
        process.execPath,
        [join(ROOT, 'node_modules', 'prisma', 'build', 'index.js'), 'generate', '--schema', 'schema.prisma'],
        { cwd: work, env: { ...process.env, PRISMA_SCHEMA_ENGINE_BINARY: SCHEMA, CI: '1' } },
      );
      const fresh = join(work, 'generated');
      expect(files(fresh)).toEqual(files(COMMITTED));
      for (const file of files(fresh)) {
        const same = readFileSync(join(fresh, file), 'utf8') === readFileSync(join(COMMITTED, file), 'utf8');
        expect({ file, same }).toEqual({ file, same: true });
      }
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});
