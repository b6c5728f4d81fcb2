/**
 * What each ops command starts: which state machine, with which input (the console input of the
 * runbook). The CLI on AWS (bin/ops/aws.ts) and on a local migration (bin/ops/local.ts) both
 * start exactly this.
 */
import type { OpsCommand, StateMachineKey } from './commands';

/** The options that were given (an absent or false one is left out of the input). */
const given = (options: Record<string, string | boolean | undefined>) =>
  Object.fromEntries(Object.entries(options).filter(([, value]) => Boolean(value)));

/** Which state machine a command starts, and with what input (the console input of the runbook). */
export function executionRequest(
  command: Exclude<OpsCommand, { command: 'reset' }>,
  user: string,
): { stateMachine: StateMachineKey; input: Record<string, unknown> } {
  switch (command.command) {
    case 'status':
      return { stateMachine: 'migration', input: { action: 'status' } };
    case 'advance':
      return {
        stateMachine: 'migration',
        input: { action: 'advance', ...given({ through: command.through, confirm: command.confirm }) },
      };
    case 'drop-archives':
      return { stateMachine: 'migration', input: { action: 'drop-archives', confirm: command.confirm } };
    case 'cutover':
      return { stateMachine: 'cutover', input: { action: command.mode } };
    case 'switch-writes':
      return { stateMachine: 'cutover', input: { action: 'switch-writes' } };
    case 'throttle':
      return { stateMachine: 'migration', input: { action: 'throttle', ...command.change } };
    case 'redrive':
      return { stateMachine: 'migration', input: { action: 'redrive' } };
    case 'rollback':
      return {
        stateMachine: 'rollback',
        input: {
          reason: command.reason,
          actor: `cli:${user}`,
          ...given({ force: command.force, confirm: command.confirm }),
        },
      };
  }
}
