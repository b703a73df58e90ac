CREATE TABLE "events" (
	"team_id" text NOT NULL,
	"seq" integer NOT NULL,
	"type" text NOT NULL,
	"task_id" text NOT NULL,
	"payload" text NOT NULL,
	"created_at" bigint NOT NULL,
	"published" integer DEFAULT 0 NOT NULL,
	CONSTRAINT "events_team_id_seq_pk" PRIMARY KEY("team_id","seq")
);
--> statement-breakpoint
CREATE TABLE "mutations" (
	"team_id" text NOT NULL,
	"actor" text NOT NULL,
	"mutation_id" text NOT NULL,
	"fingerprint" text NOT NULL,
	"result" text NOT NULL,
	"created_at" bigint NOT NULL,
	CONSTRAINT "mutations_team_id_actor_mutation_id_pk" PRIMARY KEY("team_id","actor","mutation_id")
);
--> statement-breakpoint
CREATE TABLE "revocations" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "revocations_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"user_id" text NOT NULL,
	"team_id" text,
	"created_at" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "tasks" (
	"id" text PRIMARY KEY NOT NULL,
	"team_id" text NOT NULL,
	"title" text NOT NULL,
	"description" text DEFAULT '' NOT NULL,
	"status" text DEFAULT 'todo' NOT NULL,
	"assignee" text,
	"due_date" text,
	"version" integer NOT NULL,
	"created_at" bigint NOT NULL,
	"updated_at" bigint NOT NULL,
	"updated_by" text NOT NULL
);
--> statement-breakpoint
CREATE TABLE "team_sequences" (
	"team_id" text PRIMARY KEY NOT NULL,
	"seq" integer NOT NULL,
	"pruned_through" integer DEFAULT 0 NOT NULL
);
--> statement-breakpoint
CREATE INDEX "events_unpublished_idx" ON "events" USING btree ("team_id","seq") WHERE published = 0;--> statement-breakpoint
CREATE INDEX "events_created_idx" ON "events" USING btree ("created_at");--> statement-breakpoint
CREATE INDEX "mutations_created_idx" ON "mutations" USING btree ("created_at");--> statement-breakpoint
CREATE INDEX "revocations_created_idx" ON "revocations" USING btree ("created_at");--> statement-breakpoint
CREATE INDEX "tasks_team_created_id_idx" ON "tasks" USING btree ("team_id","created_at","id");