import { Template } from 'aws-cdk-lib/assertions';
import { CONFIG_LIMITS, configFromLambdaEnvironment } from '../../lambdas/core/config';
import { ConfigError } from '../../lambdas/core/errors';
import { loadStackConfig, type StackConfigInput } from '../../lib/config';
import { WORKER_ENTRY } from '../../lib/constructs/backfill-pipeline';
import { checkLambdaEnvironment } from '../../lib/constructs/migration-function';
import { MigrationStack } from '../../lib/migration-stack';
import { CONFIG_ENV } from '../../lambdas/core/config';
import { LAMBDA_ENV } from '../../lib/runtime-contract';
import { appWithoutBundling, DATABASE_ENVIRONMENT, existingConfigInput } from './helpers';

/** What `cdk synth` does with a stack configuration: load it from context, build the stack. */
function synth(input: StackConfigInput): Template {
  const app = appWithoutBundling();
  const config = loadStackConfig({ tryGetContext: (key) => (key === 'migration' ? input : undefined) });
  const stack = new MigrationStack(app, 'Limits', { config, orchestratorEntry: WORKER_ENTRY });
  void stack.orchestrator;
  return Template.fromStack(stack);
}

function synthError(input: StackConfigInput): ConfigError {
  try {
    synth(input);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('expected synth to fail with ConfigError');
}

/** `n` strictly increasing levels ending at 100, each baking `bakeMinutes`. */
const levels = (n: number, bakeMinutes = 30) =>
  Array.from({ length: n }, (_, i) => ({ percentage: Math.round(((i + 1) * 100) / n), bakeMinutes }));

const { concurrency, maxReceiveCount, cutoverLevels, bakeSeconds } = CONFIG_LIMITS;
const maxBakeMinutes = bakeSeconds.max / 60;

describe('stack configuration limits are the Lambdas’ limits', () => {
  it('synthesizes every setting at its limit into Lambda environments that the run-time parser accepts', () => {
    const template = synth(
      existingConfigInput({
        worker: { concurrency: concurrency.max, maxReceiveCount: maxReceiveCount.max },
        cutoverSchedule: levels(cutoverLevels.max, maxBakeMinutes),
      }),
    );

    const functions = Object.values(template.findResources('AWS::Lambda::Function'));
    expect(functions.length).toBeGreaterThanOrEqual(3);
    for (const fn of functions) {
      const env = fn.Properties.Environment.Variables as Record<string, string>;
      // The exact synthesized environment, through the parser the Lambdas run at cold start.
      const config = configFromLambdaEnvironment(env);
      expect(config.batch).toMatchObject({
        concurrency: concurrency.max,
        maxReceiveCount: maxReceiveCount.max,
      });
      expect(config.cutover.schedule).toHaveLength(cutoverLevels.max);
      expect(config.cutover.schedule[0].bakeSeconds).toBe(bakeSeconds.max);
    }
  });

  it.each<[string, Partial<StackConfigInput>, string]>([
    [
      'worker concurrency above the limit',
      { worker: { concurrency: concurrency.max + 1 } },
      'worker.concurrency',
    ],
    [
      'a max receive count above the limit',
      { worker: { maxReceiveCount: maxReceiveCount.max + 1 } },
      'worker.maxReceiveCount',
    ],
    [
      'a max receive count below the limit',
      { worker: { maxReceiveCount: maxReceiveCount.min - 1 } },
      'worker.maxReceiveCount',
    ],
    [
      'more cutover levels than the limit',
      { cutoverSchedule: levels(cutoverLevels.max + 1) },
      'cutoverSchedule',
    ],
    ['no cutover level', { cutoverSchedule: [] }, 'cutoverSchedule'],
    [
      'a bake time above the limit',
      { cutoverSchedule: levels(2, maxBakeMinutes + 1) },
      'cutoverSchedule.0.bakeMinutes',
    ],
    [
      'a cutover level above 100 %',
      { cutoverSchedule: [{ percentage: 101, bakeMinutes: 1 }] },
      'cutoverSchedule.0.percentage',
    ],
  ])('refuses %s at synth with ConfigError naming the field', (_name, overrides, field) => {
    const error = synthError(existingConfigInput(overrides));

    expect(error.issues.map((i) => i.field)).toContain(field);
  });
});

describe('the synth-time check of a Lambda environment', () => {
  const valid: Record<string, string> = {
    ...DATABASE_ENVIRONMENT,
  };

  it('accepts a complete environment', () => {
    expect(() => checkLambdaEnvironment('Stack/Fn', valid)).not.toThrow();
  });

  it.each([
    [CONFIG_ENV.concurrency, String(concurrency.max + 1), CONFIG_ENV.concurrency],
    [CONFIG_ENV.maxReceiveCount, '0', CONFIG_ENV.maxReceiveCount],
    [
      CONFIG_ENV.cutoverSchedule,
      JSON.stringify(
        Array.from({ length: cutoverLevels.max + 1 }, (_, i) => ({ percentage: i + 80, bakeSeconds: 1 })),
      ),
      CONFIG_ENV.cutoverSchedule,
    ],
    [CONFIG_ENV.v2Schema, 'Robert"); DROP', `${CONFIG_ENV.v2Schema}`],
    [LAMBDA_ENV.v1Port, 'not-a-port', LAMBDA_ENV.v1Port],
  ])('refuses %s=%s, naming the variable and the construct', (name, value, field) => {
    let error: unknown;
    try {
      checkLambdaEnvironment('Stack/Backfill/Worker', { ...valid, [name]: value });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).issues.map((i) => i.field)).toContain(field);
    expect((error as ConfigError).message).toMatch(/Lambda environment of Stack\/Backfill\/Worker/);
  });

  it('names a variable the Lambdas need that is missing', () => {
    const { [LAMBDA_ENV.v2Database]: _dropped, ...rest } = valid;
    expect(() => checkLambdaEnvironment('Stack/Fn', rest)).toThrow(
      expect.objectContaining({
        name: 'ConfigError',
        issues: [{ field: LAMBDA_ENV.v2Database, problem: 'is required' }],
      }),
    );
  });
});
