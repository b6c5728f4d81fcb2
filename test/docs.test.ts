import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { COMMANDS, COMMAND_SPECS, PHASES } from '../bin/ops/commands';
import { flagsOf } from '../bin/cli-args';
import { rehearsalFlags } from '../bin/rehearsal/options';
import { cutoverInputSchema, migrationInputSchema } from '../lambdas/core/task-events';

/** The documentation a user reads from the repository alone. */
const ROOT = join(__dirname, '..');
const DOCS = ['README.md', 'docs/DESIGN.md', 'client/README.md', 'vendor/README.md'];
const read = (file: string) => readFileSync(join(ROOT, file), 'utf8');
const readme = read('README.md');

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes. */
const anchor = (heading: string) =>
  heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N} _-]/gu, '')
    .replace(/ /g, '-');

const anchorsOf = (text: string) =>
  new Set([...text.matchAll(/^#{1,6} (.+)$/gm)].map((m) => anchor(m[1].replace(/`/g, ''))));

/** Markdown links outside code: `[text](target)`. */
function linksOf(text: string): string[] {
  const prose = text.replace(/```[\s\S]*?```/g, '').replace(/`[^`\n]*`/g, '');
  return [...prose.matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]);
}

describe('documentation', () => {
  it.each(DOCS)('%s: every relative link resolves inside the repository', (file) => {
    const links = linksOf(read(file)).filter((l) => !/^[a-z]+:/i.test(l));
    if (file === 'README.md') expect(links.length).toBeGreaterThan(3);
    for (const link of links) {
      const [path, fragment] = link.split('#');
      const target = path ? join(ROOT, dirname(file), path) : join(ROOT, file);
      expect({ link, inRepository: !relative(ROOT, target).startsWith('..') }).toEqual({
        link,
        inRepository: true,
      });
      expect({ link, exists: existsSync(target) }).toEqual({ link, exists: true });
      if (fragment) {
        expect({ link, anchorFound: anchorsOf(readFileSync(target, 'utf8')).has(fragment) }).toEqual({
          link,
          anchorFound: true,
        });
      }
    }
  });

  it.each(DOCS)('%s: every repository path it names in code style exists', (file) => {
    const named = [
      ...read(file).matchAll(/`((?:bin|lib|lambdas|client|sql|test|bench|docs|vendor|\.ci)\/[\w./-]*)`/g),
    ].map((m) => m[1]);
    for (const path of named)
      expect({ path, exists: existsSync(join(ROOT, path)) }).toEqual({ path, exists: true });
  });

  it('the README names no file outside the repository', () => {
    expect(readme).not.toMatch(/\.\.\/shared|\/work\//);
  });
});

describe('the runbook covers every console input and CLI command', () => {
  it('names every command of the ops CLI, and --local for each', () => {
    for (const command of COMMANDS) {
      expect({ command, documented: readme.includes(`npm run migrate -- ${command}`) }).toEqual({
        command,
        documented: true,
      });
      expect({ command, local: new RegExp(`npm run migrate -- ${command}.*--local`).test(readme) }).toEqual({
        command,
        local: true,
      });
    }
  });

  it('names every flag of every ops command', () => {
    const runbook = readme.slice(readme.indexOf('## Operating the migration'));
    for (const name of COMMANDS) {
      for (const { flag } of flagsOf(COMMAND_SPECS[name].schema)) {
        expect({ flag, documented: runbook.includes(flag) || readme.includes(flag) }).toEqual({
          flag,
          documented: true,
        });
      }
    }
  });

  it('gives the console input of every Migration and Cutover action, and of a forced rollback', () => {
    const migrationActions = migrationInputSchema.options.map((o) => o.shape.action.value);
    for (const action of migrationActions) expect(readme).toContain(`{"action":"${action}"`);
    expect(readme).toContain('{"action":"advance","through":"VERIFY"}');
    for (const phase of PHASES) expect(readme).toContain(phase);
    for (const action of cutoverInputSchema.shape.action.unwrap().options) {
      expect(readme).toContain(`{"action":"${action}"}`);
    }
    expect(readme).toContain('{"reason":"p99 latency up after 25 %"}');
    expect(readme).toContain('{"reason":"…","force":true,"confirm":"ROLL BACK TO STALE V1"}');
    expect(readme).toContain('{"action":"advance","confirm":"RENAME V1 TABLES"}');
    expect(readme).toContain('{"action":"drop-archives","confirm":"DROP V1 ARCHIVES"}');
  });

  it('lists every rehearsal flag', () => {
    const table = readme.slice(readme.indexOf('### Rehearsal flags'), readme.indexOf('## Tests'));
    for (const { flag } of flagsOf(rehearsalFlags)) {
      expect({ flag, listed: table.includes(flag) }).toEqual({ flag, listed: true });
    }
  });
});

/** Folders under `root` (recursively) that hold TypeScript sources, relative to ROOT. */
function sourceFolders(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    const entries = readdirSync(join(ROOT, dir), { withFileTypes: true });
    if (entries.some((e) => e.isFile() && e.name.endsWith('.ts'))) out.push(dir);
    for (const e of entries) if (e.isDirectory() && e.name !== 'generated') walk(`${dir}/${e.name}`);
  };
  walk(root);
  return out;
}

describe("the README's layout section matches the tree", () => {
  const layout = readme.slice(readme.indexOf('## Layout'));
  const block = layout.slice(layout.indexOf('```') + 3, layout.indexOf('```', layout.indexOf('```') + 3));
  const IGNORED = new Set([
    'node_modules',
    'cdk.out',
    'coverage',
    'reports',
    'dist',
    '.git',
    '.rehearsal',
    '.pg-test',
  ]);

  it('names every top-level folder, and each folder it names exists', () => {
    const named = [...block.matchAll(/^(\.?[\w-]+)(?:\/\S*)?\s/gm)].map((m) => m[1]);
    expect(named.length).toBeGreaterThan(8);
    for (const name of named)
      expect({ name, exists: existsSync(join(ROOT, name)) }).toEqual({ name, exists: true });
    const folders = readdirSync(ROOT).filter((f) => statSync(join(ROOT, f)).isDirectory() && !IGNORED.has(f));
    for (const folder of folders)
      expect({ folder, named: named.includes(folder) }).toEqual({ folder, named: true });
  });

  it('names every source subfolder of bin, lib, lambdas and client', () => {
    const subfolders = ['bin', 'lib', 'lambdas', 'client']
      .flatMap(sourceFolders)
      .filter((f) => f.includes('/'));
    expect(subfolders).toEqual(expect.arrayContaining(['lambdas/core/verify', 'lib/constructs']));
    for (const folder of subfolders) {
      // As `name/`, or as `parent/name` (adapters/aws).
      const [parent, name] = folder.split('/').slice(-2);
      const named = new RegExp(`\\b${name}/`).test(block) || block.includes(`${parent}/${name}`);
      expect({ folder, named }).toEqual({ folder, named: true });
    }
  });
});

describe('source modules', () => {
  it('no module of bin, lib, lambdas or client is over 450 lines', () => {
    const modules = ['bin', 'lib', 'lambdas', 'client'].flatMap(sourceFolders).flatMap((dir) =>
      readdirSync(join(ROOT, dir))
        .filter((f) => f.endsWith('.ts'))
        .map((f) => `${dir}/${f}`),
    );
    expect(modules.length).toBeGreaterThan(50);
    const long = modules
      .map((file) => ({ file, lines: read(file).split('\n').length - 1 }))
      .filter((m) => m.lines > 450);
    expect(long).toEqual([]);
  });
});
