/**
 * The errors of the command-line tools (the ops CLI, the local migration): MigrationError
 * subclasses like the core's, named by what went wrong and saying what to do.
 */
import { MigrationError } from '../lambdas/core/errors';

/** The ops CLI needs a state machine ARN that neither its flag nor its environment variable gives. */
export class StateMachineArnMissingError extends MigrationError {
  constructor(
    readonly stateMachine: string,
    readonly flag: string,
    readonly envVar: string,
  ) {
    super(
      `No ${stateMachine} state machine ARN: pass ${flag} or set ${envVar} to the stack output ` +
        `${stateMachine}StateMachineArn (aws cloudformation describe-stacks --stack-name IotV2Migration ` +
        `--query "Stacks[0].Outputs"), or practise without AWS with --local`,
      {
        stateMachine,
        flag,
        envVar,
        stackOutput: `${stateMachine}StateMachineArn`,
      },
    );
  }
}

/** A Step Functions call of the ops CLI failed; `awsError` is the service's error name. */
export class StepFunctionsCallError extends MigrationError {
  constructor(
    readonly operation: string,
    readonly awsError: string,
    reason: string,
    readonly hint: string | undefined,
    details: Record<string, unknown> = {},
    options?: { cause?: unknown },
  ) {
    super(
      `${operation} failed with ${awsError}: ${reason}${hint ? ` (${hint})` : ''}`,
      { operation, awsError, hint, ...details },
      options,
    );
  }
}

/** Another command is using the local migration (`migrate … --local`); one at a time. */
export class LocalMigrationInUseError extends MigrationError {
  constructor(
    readonly directory: string,
    readonly pid: number,
  ) {
    super(
      `The local migration in ${directory} is in use by process ${pid}; wait for that command to end ` +
        '(a local migration runs one command at a time)',
      { directory, pid },
    );
  }
}

/** The embedded PostgreSQL of a rehearsal or a local migration did not start. */
export class EmbeddedPostgresError extends MigrationError {
  constructor(
    readonly dataDir: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(`The embedded PostgreSQL (data in ${dataDir}) did not start: ${reason}`, { dataDir }, options);
  }
}
