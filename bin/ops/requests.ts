/**
 * What each ops command starts: which state machine, with which input (the console input of the
 * runbook). The CLI on AWS (bin/ops/aws.ts) and on a local migration (bin/ops/local.ts) both
 * start exactly this.
 */
import type { OpsCommand, StateMachineKey } from './commands';

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
        input: {
          action: 'advance',
          ...(command.through ? { through: command.through } : {}),
          ...(command.confirm ? { confirm: command.confirm } : {}),
        },
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
          ...(command.force ? { force: true } : {}),
          ...(command.confirm ? { confirm: command.confirm } : {}),
        },
      };
  }
}
