import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { COMMANDS, COMMAND_SPECS, PHASES } from '../bin/ops/commands';
import { flagsOf } from '../bin/cli-args';
import { rehearsalFlags } from '../bin/rehearsal/options';
import { cutoverInputSchema, migrationInputSchema } from '../lambdas/core/orchestrator';

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
    expect(readme).toContain('{"reason":"…","force":true}');
  });

  it('lists every rehearsal flag', () => {
    const table = readme.slice(readme.indexOf('### Rehearsal flags'), readme.indexOf('## Tests'));
    for (const { flag } of flagsOf(rehearsalFlags)) {
      expect({ flag, listed: table.includes(flag) }).toEqual({ flag, listed: true });
    }
  });
});
