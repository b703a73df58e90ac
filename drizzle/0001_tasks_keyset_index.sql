DROP INDEX `tasks_team_created_idx`;--> statement-breakpoint
CREATE INDEX `tasks_team_created_id_idx` ON `tasks` (`team_id`,`created_at`,`id`);