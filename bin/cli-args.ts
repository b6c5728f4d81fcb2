import { z } from 'zod';
import { describeIssues } from '../lambdas/core/config';
import { InvalidInputError, MigrationError } from '../lambdas/core/errors';

/**
 * What `--help` prints about a command besides its flags. The flags themselves (names, values,
 * defaults, descriptions) come from the command's zod schema: each flag's `.describe()` is its
 * help line, so flags and help cannot drift apart.
 */
export interface CommandHelp {
  /** The command line, e.g. `npm run rehearse -- [flags]`. */
  readonly usage: string;
  /** What the command does. */
  readonly summary: string;
  /** Placeholders of valued flags (`devices: 'N'` shows `--devices N`). @default 'VALUE' */
  readonly values?: Readonly<Record<string, string>>;
  /** Lines printed after the flags (exit status, examples). */
  readonly notes?: readonly string[];
}

/** A flag as `--help` shows it and the parser reads it. */
export interface FlagInfo {
  /** `--kebab-name` */
  flag: string;
  /** The schema key (camelCase). */
  key: string;
  /** A flag without a value (`--json`); every other flag takes one. */
  boolean: boolean;
  description: string;
  default?: unknown;
}

/** `--help` was given: not an error; the entry point prints `text` and exits 0. */
export class HelpRequest {
  constructor(readonly text: string) {}
}

const kebab = (key: string) => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
const camel = (flag: string) => flag.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());

type AnyObject = z.ZodObject<z.ZodRawShape>;

/** The object schema under refinements (`.refine` keeps the object in zod 4). */
function shapeOf(schema: z.ZodType): z.ZodRawShape {
  return (schema as AnyObject).shape;
}

/** The flags of a command's schema, in declaration order. */
export function flagsOf(schema: z.ZodType): FlagInfo[] {
  return Object.entries(shapeOf(schema)).map(([key, field]) => {
    let inner = field as z.ZodType;
    let description = (field as z.ZodType).description;
    let defaultValue: unknown;
    while (inner instanceof z.ZodDefault || inner instanceof z.ZodOptional) {
      if (inner instanceof z.ZodDefault) defaultValue = inner._zod.def.defaultValue;
      inner = inner.unwrap() as z.ZodType;
      description ??= inner.description;
    }
    return {
      flag: `--${kebab(key)}`,
      key,
      boolean: inner instanceof z.ZodBoolean,
      description: description ?? '',
      ...(defaultValue === undefined ? {} : { default: defaultValue }),
    };
  });
}

/** The `--help` text of a command: usage, summary, each flag with its value and default, notes. */
export function helpText(schema: z.ZodType, help: CommandHelp): string {
  const flags = flagsOf(schema);
  const left = flags.map((f) => (f.boolean ? f.flag : `${f.flag} ${help.values?.[f.key] ?? 'VALUE'}`));
  const width = Math.max(...left.map((l) => l.length), 10) + 2;
  const lines = [`usage: ${help.usage}`, '', help.summary, '', 'flags:'];
  flags.forEach((f, i) => {
    const shown = f.boolean ? f.default === true : f.default !== undefined;
    const suffix = shown ? ` (default: ${String(f.default)})` : '';
    lines.push(`  ${left[i].padEnd(width)}${f.description}${suffix}`);
  });
  lines.push(`  ${'--help'.padEnd(width)}print this help and exit`);
  if (help.notes?.length) lines.push('', ...help.notes);
  return lines.join('\n');
}

/** True when the command line asks for help (`--help` or `-h` anywhere). */
export const wantsHelp = (argv: readonly string[]) => argv.includes('--help') || argv.includes('-h');

/**
 * Reads `argv` against a command's flags, before any value is validated: every flag must be one
 * of the command's (an unknown one is named, with the list of valid ones), a valued flag must
 * have its value (`--fail-at` alone is an error, never silently ignored), no flag twice, no
 * stray argument. Returns the raw values keyed by schema key.
 */
export function readFlags(argv: readonly string[], schema: z.ZodType, command = 'this command') {
  const flags = flagsOf(schema);
  const byKey = new Map(flags.map((f) => [f.key, f]));
  const raw: Record<string, unknown> = {};
  const issues: { field: string; problem: string }[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) {
      issues.push({ field: '(arguments)', problem: `unexpected argument "${arg}"` });
      continue;
    }
    const eq = arg.indexOf('=');
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    const info = byKey.get(camel(flag.slice(2)));
    if (!info) {
      issues.push({
        field: flag,
        problem: `is not a flag of ${command}; its flags are ${flags.map((f) => f.flag).join(', ')}, --help`,
      });
      continue;
    }
    if (info.key in raw) {
      issues.push({ field: flag, problem: 'is given more than once' });
      continue;
    }
    if (info.boolean) {
      const value = eq > 0 ? arg.slice(eq + 1) : 'true';
      if (value !== 'true' && value !== 'false') {
        issues.push({ field: flag, problem: 'takes no value (or =true, =false)' });
      } else raw[info.key] = value === 'true';
    } else if (eq > 0) {
      raw[info.key] = arg.slice(eq + 1);
    } else if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) {
      raw[info.key] = argv[++i];
    } else {
      issues.push({ field: flag, problem: 'needs a value' });
    }
  }
  if (issues.length > 0) throw new InvalidInputError('command-line flags', issues);
  return raw;
}

/**
 * Parses a command's flags: `--name value`, `--name=value` and bare boolean `--flag`, checked by
 * readFlags, then validated by the command's zod schema. `--help` throws a HelpRequest with the
 * command's help (when `help` is given); a bad flag throws InvalidInputError naming it.
 */
export function parseArgs<S extends z.ZodType>(
  argv: readonly string[],
  schema: S,
  help?: CommandHelp,
  command?: string,
): z.infer<S> {
  if (help && wantsHelp(argv)) throw new HelpRequest(helpText(schema, help));
  const raw = readFlags(argv, schema, command);
  const result = schema.safeParse(raw);
  if (!result.success) {
    throw new InvalidInputError(
      'command-line flags',
      describeIssues(result.error).map((i) => ({
        field: i.field ? `--${kebab(i.field)}` : '(flags)',
        problem: i.problem,
      })),
    );
  }
  return result.data;
}

/** 2 for a bad command line or configuration (nothing was done), 1 for anything else. */
export function exitCodeOf(error: unknown): number {
  const name = (error as Error | undefined)?.name;
  return name === 'InvalidInputError' || name === 'ConfigError' || name === 'StateMachineArnMissingError'
    ? 2
    : 1;
}

/**
 * The lines a command prints for an error: a MigrationError by its name and message (never a
 * stack: the message says what is wrong); anything else by its name and message too, with its
 * stack only when DEBUG is set.
 */
export function errorLines(error: unknown, hint?: string): string[] {
  const e = error instanceof Error ? error : new Error(String(error));
  const lines = [`${e.name}: ${e.message}`];
  if (!(e instanceof MigrationError) && process.env.DEBUG && e.stack) lines.push(e.stack);
  if (hint && exitCodeOf(e) === 2) lines.push(hint);
  return lines;
}

/**
 * Ends a command that threw: prints the help it asked for (exit 0), or the error by name
 * (exit 2 for a bad command line or configuration, 1 otherwise).
 */
export function exitOnError(error: unknown, hint?: string): never {
  if (error instanceof HelpRequest) {
    console.log(error.text);
    process.exit(0);
  }
  for (const line of errorLines(error, hint)) console.error(line);
  process.exit(exitCodeOf(error));
}
