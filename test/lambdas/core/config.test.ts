import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CONFIG_ENV, loadConfig, parseConfig } from '../../../lambdas/core/config';
import { ConfigError } from '../../../lambdas/core/errors';

const dirs: string[] = [];
afterAll(() => dirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));
const scratch = () => {
  const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
  dirs.push(dir);
  return dir;
};

const minimal = { v1: { url: 'postgres://u:p@h:5432/v1' }, v2: { url: 'postgres://u:p@h:5432/v2' } };

describe('configuration', () => {
  it('fills every default from DESIGN.md', () => {
    const config = parseConfig(minimal);
    expect(config.tenant).toEqual({
      id: 'default_tenant_id',
      name: 'Default Tenant',
      slug: 'default',
      plan: 'ENTERPRISE',
      status: 'ACTIVE',
    });
    expect(config.schemas).toEqual({ v1: 'public', v2: 'public', control: 'migration_control' });
    expect(config.ssmPrefix).toBe('/iot-migration');
    expect(config.batch.telemetryWindowRows).toBe(50_000);
    expect(config.telemetryStorage).toBe('auto');
  });

  it.each([
    [{ ...minimal, v1: { url: 'mysql://x' } }, 'v1.url'],
    [{ ...minimal, schemas: { v2: 'Bad-Name; drop' } }, 'schemas.v2'],
    [{ ...minimal, ssmPrefix: 'no-leading-slash' }, 'ssmPrefix'],
    [{ ...minimal, telemetryStorage: 'mongo' }, 'telemetryStorage'],
    [{ ...minimal, batch: { telemetryWindowRows: 5 } }, 'batch.telemetryWindowRows'],
    [{ ...minimal, tenant: { slug: 'Has Spaces' } }, 'tenant.slug'],
    [{ ...minimal, surprise: true }, ''],
    [{ v1: minimal.v1 }, 'v2'],
  ])('names the bad field (%#)', (input, field) => {
    let error: unknown;
    try {
      parseConfig(input);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).issues.map((i) => i.field)).toContain(field);
  });

  it('reads a file and overlays the environment', () => {
    const dir = scratch();
    const file = join(dir, 'c.json');
    writeFileSync(file, JSON.stringify({ ...minimal, tenant: { id: 'acme', slug: 'acme' } }));
    const config = loadConfig({
      [CONFIG_ENV.file]: file,
      [CONFIG_ENV.v2Url]: 'postgres://other/v2',
      [CONFIG_ENV.concurrency]: '6',
    });
    expect(config.tenant.id).toBe('acme');
    expect(config.v2).toEqual({ url: 'postgres://other/v2' });
    expect(config.batch.concurrency).toBe(6);
  });

  it('says what is wrong with an unreadable or invalid file and with bad environment values', () => {
    expect(() => loadConfig({ [CONFIG_ENV.file]: '/no/such/file.json' })).toThrow(
      /MIGRATION_CONFIG_FILE: cannot read/,
    );
    const dir = scratch();
    writeFileSync(join(dir, 'bad.json'), '{ nope');
    expect(() => loadConfig({ [CONFIG_ENV.file]: join(dir, 'bad.json') })).toThrow(/not valid JSON/);
    expect(() =>
      loadConfig({
        [CONFIG_ENV.v1Url]: minimal.v1.url,
        [CONFIG_ENV.v2Url]: minimal.v2.url,
        [CONFIG_ENV.concurrency]: 'many',
      }),
    ).toThrow(/batch\.concurrency/);
  });
});
