import type { z } from 'zod';
import { describeIssues } from '../lambdas/core/config';
import { InvalidInputError } from '../lambdas/core/errors';

/**
 * Parses `--name value`, `--name=value` and bare `--flag` arguments into an object keyed by
 * camelCase names, then validates it with the command's zod schema (unknown flags included,
 * via `.strict()`), so a bad flag gets InvalidInputError naming it.
 */
export function parseArgs<S extends z.ZodType>(
  argv: string[],
  schema: S,
  booleans: string[] = [],
): z.infer<S> {
  const raw: Record<string, unknown> = {};
  const positional: string[] = [];
  const camel = (s: string) => s.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) {
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = camel(eq > 0 ? arg.slice(2, eq) : arg.slice(2));
    if (eq > 0) raw[name] = arg.slice(eq + 1);
    else if (booleans.includes(name)) raw[name] = true;
    else if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) raw[name] = argv[++i];
    else raw[name] = undefined;
  }
  if (positional.length > 0) raw._ = positional;
  const result = schema.safeParse(raw);
  if (!result.success) {
    throw new InvalidInputError(
      'command-line flags',
      describeIssues(result.error).map((i) => ({
        field: i.field ? `--${i.field.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}` : '(flags)',
        problem: i.problem,
      })),
    );
  }
  return result.data;
}

/** Prints a MigrationError's message (never a stack) and exits with status 2. */
export function exitOnError(error: unknown): never {
  const e = error as Error;
  console.error(`${e.name ?? 'Error'}: ${e.message}`);
  process.exit(e.name === 'InvalidInputError' || e.name === 'ConfigError' ? 2 : 1);
}
