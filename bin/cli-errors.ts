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

/**
 * A V1 given by URL has none of V1's tables: the rehearsal only reads a given V1, so it stops
 * (nothing written) and says what it found there, instead of generating a V1 into what may be
 * the wrong database.
 */
export class V1NotFoundError extends MigrationError {
  constructor(
    readonly database: string,
    readonly schema: string,
    readonly found: readonly string[],
  ) {
    super(
      `V1 not found: database "${database}" has none of V1's tables (users, devices, device_data, alerts) in ` +
        `schema ${schema}; ${
          found.length === 0
            ? 'it holds no tables at all'
            : `it holds ${found.length} other table(s): ${found.slice(0, 10).join(', ')}${found.length > 10 ? ', …' : ''}`
        }. A V1 given with --v1-url is only read, so nothing was written. Check the URL, or pass ` +
        `--generate-v1-in ${database} to generate a synthetic V1 into that database`,
      { database, schema, found: found.slice(0, 50) },
    );
  }
}
