import { mkdirSync, mkdtempSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { checkTempDirEmpty, RUN_TMPDIR_PREFIX } from './temp-dir';

describe('the test run’s temporary directory', () => {
  it('is the run’s own one, which global teardown checks is left empty', () => {
    expect(basename(tmpdir())).toMatch(new RegExp(`^${RUN_TMPDIR_PREFIX}`));
    expect(process.env.TMPDIR).toBe(tmpdir());
  });

  it('fails naming what a run left behind, and removes it', () => {
    const dir = mkdtempSync(join(tmpdir(), RUN_TMPDIR_PREFIX));
    mkdirSync(join(dir, 'cdk.out1234'));
    writeFileSync(join(dir, 'report.json'), '{}');

    expect(() => checkTempDirEmpty(dir)).toThrow(
      'the tests left 2 entries in the temporary directory: cdk.out1234, report.json',
    );
    expect(existsSync(dir)).toBe(false);
  });

  it('passes when nothing was left', () => {
    const dir = mkdtempSync(join(tmpdir(), RUN_TMPDIR_PREFIX));

    expect(() => checkTempDirEmpty(dir)).not.toThrow();
    expect(existsSync(dir)).toBe(false);
  });
});
