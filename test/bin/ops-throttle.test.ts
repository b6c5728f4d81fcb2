import { parseCommand } from '../../bin/ops/commands';
import { executionRequest } from '../../bin/ops/requests';
import { InvalidInputError } from '../../lambdas/core/errors';

/** What `migrate …argv` (a state machine command) starts its state machine with. */
function request(argv: string[]) {
  const command = parseCommand(argv);
  if (command.command === 'reset') throw new Error('not a state machine command');
  return executionRequest(command, 'alice');
}

/** `migrate …argv` is refused with an InvalidInputError naming `field` and what is wrong with it. */
function expectRefused(argv: string[], field: string, problem: RegExp): void {
  let issues: unknown;
  try {
    parseCommand(argv);
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidInputError);
    issues = (error as InvalidInputError).issues;
  }
  expect(issues).toContainEqual({ field, problem: expect.stringMatching(problem) });
}

/** `migrate throttle`: its flags, and the console input it starts the Migration state machine with. */
describe('migrate throttle', () => {
  it.each<[string[], Record<string, unknown>]>([
    [['throttle', '--pause'], { action: 'throttle', pause: true }],
    [['throttle', '--resume'], { action: 'throttle', pause: false }],
    [
      ['throttle', '--rows-per-second', '5000', '--window-rows', '2000'],
      { action: 'throttle', rowsPerSecond: 5000, windowRows: 2000 },
    ],
    [
      ['throttle', '--rows-per-second', '0', '--window-rows', '0', '--auto-throttle', 'off'],
      { action: 'throttle', rowsPerSecond: null, windowRows: null, autoThrottle: false },
    ],
  ])('%j starts Migration with %j', (argv, expected) => {
    expect(request(argv)).toEqual({ stateMachine: 'migration', input: expected });
  });

  it.each<[string[], string, RegExp]>([
    [['throttle'], '--pause', /say what to change/],
    [['throttle', '--pause', '--resume'], '--pause', /not both/],
    [['throttle', '--rows-per-second', '-5'], '--rows-per-second', /0|greater/],
    [['throttle', '--window-rows', '50'], '--window-rows', /must be 0 or between 100 and 5000000/],
    [['throttle', '--auto-throttle', 'maybe'], '--auto-throttle', /must be on or off/],
  ])('%j: %s %s', expectRefused);
});

/** `migrate redrive`: the console input it starts the Migration state machine with, and its flags. */
describe('migrate redrive', () => {
  it('starts Migration with {"action":"redrive"}', () => {
    expect(request(['redrive'])).toEqual({
      stateMachine: 'migration',
      input: { action: 'redrive' },
    });
  });

  it.each<[string[], string, RegExp]>([
    [['redrive', '--window', '3'], '--window', /is not a flag of redrive/],
    [['redrive', '--migration-arn', 'nope'], '--migration-arn', /state machine ARN/],
  ])('%j: %s %s', expectRefused);
});
