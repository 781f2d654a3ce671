/* commands.h — the subcommands of the `cnf` command, one file each
 * (tools/cnf_<name>.c). Each takes argv with argv[0] = the subcommand's name
 * and returns the process exit code (or exits through cli_die). */
#ifndef CNF_TOOLS_COMMANDS_H
#define CNF_TOOLS_COMMANDS_H

int cmd_toy(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_grad(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_plot(int argc, char **argv);
int cmd_convert(int argc, char **argv);

#endif /* CNF_TOOLS_COMMANDS_H */
