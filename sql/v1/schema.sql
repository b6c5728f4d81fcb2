-- V1 reference schema: the single-tenant schema the IoT platform runs on today (Prisma
-- defaults, quoted camelCase). Used by the rehearsal and the tests; the migration only reads it.
CREATE TYPE "UserRole" AS ENUM ('ADMIN', 'OPERATOR', 'VIEWER');
CREATE TABLE users (
  id text PRIMARY KEY, email text NOT NULL UNIQUE, name text,
  "passwordHash" text NOT NULL, role "UserRole" NOT NULL DEFAULT 'VIEWER',
  "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, "updatedAt" timestamp(3) NOT NULL);
CREATE TABLE devices (
  id text PRIMARY KEY, name text NOT NULL, type text NOT NULL,
  status text NOT NULL DEFAULT 'OFFLINE', config jsonb,
  "ownerId" text REFERENCES users(id) ON DELETE SET NULL, "lastSeenAt" timestamp(3),
  "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, "updatedAt" timestamp(3) NOT NULL);
CREATE TABLE device_data (
  id bigserial PRIMARY KEY,
  "deviceId" text NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
  "timestamp" timestamp(3) NOT NULL, data jsonb NOT NULL, protocol text NOT NULL, source text);
CREATE INDEX device_data_device_ts ON device_data ("deviceId", "timestamp");
CREATE TABLE alerts (
  id text PRIMARY KEY, "deviceId" text NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
  severity text NOT NULL, message text NOT NULL, status text NOT NULL DEFAULT 'OPEN',
  "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, "resolvedAt" timestamp(3));
