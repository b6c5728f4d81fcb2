import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { COMMANDS, COMMAND_SPECS } from '../../bin/ops/commands';
import { flagsOf, helpText, HelpRequest, parseArgs } from '../../bin/cli-args';
import { rehearsalFlags, REHEARSAL_HELP } from '../../bin/rehearsal/options';
import { InvalidInputError } from '../../lambdas/core/errors';

const ROOT = join(__dirname, '..', '..');

/** Every npm script that runs a TypeScript entry point with tsx, as `npm run <script>` runs it. */
const scripts = Object.entries(
  (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> })
    .scripts,
)
  .map(([name, command]) => [name, /^tsx (\S+\.ts)$/.exec(command)?.[1]] as const)
  .filter((entry): entry is readonly [string, string] => entry[1] !== undefined);

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs an entry point as its npm script does (tsx), in one process, without tsx's temp cache. */
function run(file: string, args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', file, ...args],
      { cwd: ROOT, env: { ...process.env, TSX_DISABLE_CACHE: '1' }, timeout: 60_000 },
      (error, stdout, stderr) => resolve({ code: error ? (error.code as number) : 0, stdout, stderr }),
    );
  });
}

/** Runs the cases two at a time (two cores): each is a Node process loading the app. */
async function runAll<T>(cases: readonly T[], fn: (c: T) => Promise<void>): Promise<void> {
  const queue = [...cases];
  await Promise.all(
    [0, 1].map(async () => {
      for (let c = queue.shift(); c !== undefined; c = queue.shift()) await fn(c);
    }),
  );
}

const migrate = scripts.find(([name]) => name === 'migrate')![1];

/** Every command and subcommand, with one of its valued flags. */
const commands: { label: string; file: string; args: string[]; valued: string[] }[] = [
  ...scripts
    .filter(([name]) => name !== 'migrate')
    .map(([name, file]) => ({
      label: `npm run ${name}`,
      file,
      args: [],
      valued:
        {
          rehearse: ['--fail-at'],
          'seed:v1': ['--devices'],
          'bench:backfill': ['--rows'],
          'bench:verify': ['--repeat'],
          'bench:router': ['--seconds'],
          'bench:impact': ['--writes-per-second'],
          'bench:prisma': ['--writes'],
          'backup:restore': ['--target-url'],
        }[name] ?? [],
    })),
  { label: 'npm run migrate', file: migrate, args: [], valued: [] },
  ...COMMANDS.map((name) => ({
    label: `npm run migrate -- ${name}`,
    file: migrate,
    args: [name],
    valued: {
      status: ['--wait', '--timeout'],
      advance: ['--through'],
      cutover: ['--cutover-arn'],
      rollback: ['--reason'],
      'drop-archives': ['--confirm'],
      'switch-writes': ['--cutover-arn'],
      reset: ['--local', '--local-dir'],
      throttle: ['--rows-per-second'],
      redrive: ['--migration-arn'],
    }[name],
  })),
];

describe('every command and subcommand', () => {
  it('covers every tsx script of package.json', () => {
    expect(scripts.map(([name]) => name).sort()).toEqual(
      [
        'backup:restore',
        'bench:backfill',
        'bench:impact',
        'bench:prisma',
        'bench:router',
        'bench:verify',
        'migrate',
        'rehearse',
        'seed:v1',
      ].sort(),
    );
  });

  it('prints its usage, flags and defaults with --help and exits 0', async () => {
    const results: Record<string, Run> = {};
    await runAll(commands, async (c) => {
      results[c.label] = await run(c.file, [...c.args, '--help']);
    });
    for (const c of commands) {
      const r = results[c.label];
      expect({ command: c.label, code: r.code, stderr: r.stderr }).toEqual({
        command: c.label,
        code: 0,
        stderr: '',
      });
      expect(r.stdout).toMatch(new RegExp(`^usage: ${c.label.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    }
    // The flags and defaults shown are the parser's own.
    const rehearse = results['npm run rehearse'].stdout;
    for (const flag of flagsOf(rehearsalFlags)) expect(rehearse).toContain(flag.flag);
    expect(rehearse).toMatch(/--telemetry N +telemetry rows of the generated V1 \(default: 1000000\)/);
    const status = results['npm run migrate -- status'].stdout;
    for (const flag of flagsOf(COMMAND_SPECS.status.schema)) expect(status).toContain(flag.flag);
    expect(results['npm run migrate'].stdout).toMatch(/commands:\n {2}status/);
  }, 300_000);

  it('refuses a valued flag given without its value: exit 2 and InvalidInputError naming it', async () => {
    const cases = commands.filter((c) => c.valued.length > 0);
    const results: Record<string, Run> = {};
    await runAll(cases, async (c) => {
      results[c.label] = await run(c.file, [...c.args, ...c.valued]);
    });
    for (const c of cases) {
      const r = results[c.label];
      const flag = c.valued[c.valued.length - 1];
      expect({ command: c.label, code: r.code }).toEqual({ command: c.label, code: 2 });
      expect(r.stderr).toContain(`InvalidInputError: Invalid command-line flags: ${flag}: needs a value`);
      expect(r.stderr).not.toMatch(/^\s+at /m);
    }
  }, 300_000);
});

describe('parseArgs', () => {
  const schema = z
    .object({
      count: z.coerce.number().int().default(3).describe('how many'),
      name: z.string().optional().describe('a name'),
      loud: z.boolean().default(false).describe('shout'),
    })
    .strict();
  const help = { usage: 'npm run x -- [flags]', summary: 'Does x.', values: { count: 'N' } };
  const issues = (argv: string[]) => {
    try {
      parseArgs(argv, schema, help, 'x');
    } catch (error) {
      expect(error).toBeInstanceOf(InvalidInputError);
      return (error as InvalidInputError).issues;
    }
    throw new Error(`${argv.join(' ')} was accepted`);
  };

  it('reads --name value, --name=value and bare booleans', () => {
    expect(parseArgs(['--count', '5', '--name=a b', '--loud'], schema, help)).toEqual({
      count: 5,
      name: 'a b',
      loud: true,
    });
    expect(parseArgs([], schema, help)).toEqual({ count: 3, loud: false });
  });

  it.each<[string[], string, RegExp]>([
    [['--count'], '--count', /^needs a value$/],
    [['--count', '--loud'], '--count', /^needs a value$/],
    [['--nmae', 'a'], '--nmae', /is not a flag of x; its flags are --count, --name, --loud, --help/],
    [['--count', '1', '--count', '2'], '--count', /more than once/],
    [['--loud=yes'], '--loud', /takes no value/],
    [['stray'], '(arguments)', /unexpected argument "stray"/],
    [['--count', 'many'], '--count', /number/],
  ])('%j: %s %s', (argv, field, problem) => {
    expect(issues(argv)).toContainEqual({ field, problem: expect.stringMatching(problem) });
  });

  it('answers --help (anywhere) with the help text instead of parsing', () => {
    expect(() => parseArgs(['--count', '--help'], schema, help)).toThrow(HelpRequest);
    const text = helpText(schema, help);
    expect(text).toContain('usage: npm run x -- [flags]');
    expect(text).toMatch(/--count N +how many \(default: 3\)/);
    expect(text).toMatch(/--loud +shout\n/);
    expect(text).toMatch(/--help +print this help and exit/);
  });

  it('gives the rehearsal flags the help and defaults of its schema', () => {
    expect(helpText(rehearsalFlags, REHEARSAL_HELP)).toMatch(
      /--window-rows N +telemetry rows per backfill window \(default: 50000\)/,
    );
  });
});
