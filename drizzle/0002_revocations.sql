CREATE TABLE `revocations` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`user_id` text NOT NULL,
	`team_id` text,
	`created_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `revocations_created_idx` ON `revocations` (`created_at`);