import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { ConfigError } from '../../core/errors';
import type { ParameterPort } from '../../ports/parameters';

/**
 * The parameter port in a JSON file, for a local migration that outlives one command
 * (`migrate … --local`): each put is written at once (to a temporary file, then renamed), so a
 * command that ends in any way leaves the switches as the last step set them.
 */
export class FileParameters implements ParameterPort {
  private readonly values: Record<string, string>;

  /** Reads `file`, or starts from `initial` when it does not exist yet. */
  constructor(
    private readonly file: string,
    initial: Record<string, string> = {},
  ) {
    if (!existsSync(file)) {
      this.values = { ...initial };
      this.save();
      return;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(file, 'utf8'));
    } catch (cause) {
      throw new ConfigError([{ field: file, problem: `not valid JSON: ${(cause as Error).message}` }]);
    }
    if (
      typeof parsed !== 'object' ||
      parsed === null ||
      Array.isArray(parsed) ||
      Object.values(parsed).some((v) => typeof v !== 'string')
    ) {
      throw new ConfigError([{ field: file, problem: 'must hold a JSON object of string values' }]);
    }
    this.values = parsed as Record<string, string>;
  }

  async get(name: string): Promise<string | undefined> {
    return this.values[name];
  }

  async put(name: string, value: string): Promise<void> {
    this.values[name] = value;
    this.save();
  }

  /** A copy of every stored parameter. */
  entries(): Record<string, string> {
    return { ...this.values };
  }

  private save(): void {
    const temporary = `${this.file}.tmp`;
    writeFileSync(temporary, `${JSON.stringify(this.values, null, 2)}\n`);
    renameSync(temporary, this.file);
  }
}
