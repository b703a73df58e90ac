CREATE TABLE `events` (
	`team_id` text NOT NULL,
	`seq` integer NOT NULL,
	`type` text NOT NULL,
	`task_id` text NOT NULL,
	`payload` text NOT NULL,
	`created_at` integer NOT NULL,
	`published` integer DEFAULT 0 NOT NULL,
	PRIMARY KEY(`team_id`, `seq`)
);
--> statement-breakpoint
CREATE INDEX `events_unpublished_idx` ON `events` (`team_id`,`seq`) WHERE published = 0;--> statement-breakpoint
CREATE INDEX `events_created_idx` ON `events` (`created_at`);--> statement-breakpoint
CREATE TABLE `mutations` (
	`team_id` text NOT NULL,
	`actor` text NOT NULL,
	`mutation_id` text NOT NULL,
	`fingerprint` text NOT NULL,
	`result` text NOT NULL,
	`created_at` integer NOT NULL,
	PRIMARY KEY(`team_id`, `actor`, `mutation_id`)
);
--> statement-breakpoint
CREATE INDEX `mutations_created_idx` ON `mutations` (`created_at`);--> statement-breakpoint
CREATE TABLE `tasks` (
	`id` text PRIMARY KEY NOT NULL,
	`team_id` text NOT NULL,
	`title` text NOT NULL,
	`description` text DEFAULT '' NOT NULL,
	`status` text DEFAULT 'todo' NOT NULL,
	`assignee` text,
	`due_date` text,
	`version` integer NOT NULL,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	`updated_by` text NOT NULL
);
--> statement-breakpoint
CREATE INDEX `tasks_team_created_idx` ON `tasks` (`team_id`,`created_at`);--> statement-breakpoint
CREATE TABLE `team_sequences` (
	`team_id` text PRIMARY KEY NOT NULL,
	`seq` integer NOT NULL,
	`pruned_through` integer DEFAULT 0 NOT NULL
);
