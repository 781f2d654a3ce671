/* cnf_info.c — `cnf info [--model] M.h5 [--json]`: a model's architecture (docs/mathematics.md, "The network"),
 * parameter count, preprocessing and training record (cnf/io.h). */
#include <math.h>
#include <stdio.h>

#include "cli.h"
#include "commands.h"
#include "model_cli.h"

/* A JSON string (the record's values are file names and settings). */
static void json_string(const char *v)
{
    putchar('"');
    for (const unsigned char *c = (const unsigned char *)v; *c; c++) {
        if (*c == '"' || *c == '\\')
            printf("\\%c", *c);
        else if (*c < 0x20)
            printf("\\u%04x", *c);
        else
            putchar(*c);
    }
    putchar('"');
}

static void print_json(const char *path, const cnf_flow *flow, const cnf_model_extra *ex)
{
    const size_t D = cnf_flow_dim(flow), K = cnf_flow_num_blocks(flow);
    const double *p = cnf_flow_params_const(flow);
    printf("{\"model\": ");
    json_string(path);
    printf(", \"dim\": %zu, \"blocks\": %zu, \"n_params\": %zu, \"preprocess\": \"%s\", "
           "\"networks\": [",
           D, K, cnf_flow_num_params(flow), cnf_preprocess_name(cnf_flow_preprocess_kind(flow)));
    for (size_t k = 0; k < K; k++) {
        const cnf_net *net = cnf_flow_block_net(flow, k);
        const cnf_net_config *c = cnf_net_get_config(net);
        printf("%s{\"layer\": \"%s\", \"activation\": \"%s\", \"hidden\": [", k ? ", " : "",
               cnf_layer_type_name(c->layer_type), cnf_activation_name(c->activation));
        for (size_t j = 0; j < c->n_hidden; j++)
            printf("%s%zu", j ? ", " : "", c->hidden[j]);
        printf("], \"T\": ");
        cli_json_double(stdout, p[cnf_flow_T_index(flow, k)]);
        printf(", \"n_params\": %zu}", cnf_net_num_params(net));
    }
    printf("], \"log_det_preprocess\": ");
    cli_json_double(stdout, cnf_flow_preprocess_log_det(flow));
    printf(", \"record\": {");
    for (size_t i = 0; i < ex->n_config; i++) {
        printf("%s", i ? ", " : "");
        json_string(ex->config_keys[i]);
        printf(": ");
        json_string(ex->config_values[i]);
    }
    printf("}, \"state\": ");
    if (ex->state) {
        const cnf_train_state *s = ex->state;
        printf("{\"iteration\": %zu, \"seed\": %lu, \"lr\": ", s->iteration, s->seed);
        cli_json_double(stdout, s->lr);
        printf(", \"best_val_nll\": ");
        cli_json_double(stdout, s->has_best ? s->best_val_nll : NAN);
        printf(", \"best_iteration\": %zu}", s->has_best ? s->best_iteration : 0);
    } else {
        printf("null");
    }
    printf("}\n");
}

int cmd_info(int argc, char **argv)
{
    const char *model = NULL;
    int json = 0;
    cli_option opts[] = {
        {"model", CLI_STRING, &model, "M.h5", "model file (or give it as the argument)", NULL, 0},
        {"json", CLI_FLAG, &json, NULL, "print one JSON object instead of the text", NULL, 0},
        {NULL, 0, NULL, NULL, NULL, NULL, 0}};
    const char *pos[1];
    size_t n_pos;
    cli_parse(argc, argv, opts, "info [--model] M.h5 [--json]",
              "Print a model's architecture (dimension, blocks, layer type, activation,\n"
              "widths, end times), parameter count, preprocessing and training record.",
              pos, 1, &n_pos);
    if (model && n_pos)
        cli_usage("name the model once: --model %s or %s, not both", model, pos[0]);
    if (!model && !n_pos)
        cli_usage("name the model file (--model M.h5, or M.h5 as the argument)");
    if (!model)
        model = pos[0];
    cnf_model_extra ex;
    cnf_flow *flow = cli_load_model(model, &ex);
    if (json) {
        print_json(model, flow, &ex);
        cnf_flow_free(flow);
        cnf_model_extra_clear(&ex);
        return 0;
    }
    const size_t D = cnf_flow_dim(flow), K = cnf_flow_num_blocks(flow);
    const double *p = cnf_flow_params_const(flow);
    printf("model %s\n", model);
    printf("  dimension D        %zu\n", D);
    printf("  blocks K           %zu\n", K);
    printf("  parameters P       %zu (networks %zu + end times %zu)\n", cnf_flow_num_params(flow),
           cnf_flow_num_params(flow) - K, K);
    for (size_t k = 0; k < K; k++) {
        const cnf_net *net = cnf_flow_block_net(flow, k);
        const cnf_net_config *c = cnf_net_get_config(net);
        printf("  block %zu: %s layers, %s, widths %zu", k, cnf_layer_type_name(c->layer_type),
               cnf_activation_name(c->activation), c->dim);
        for (size_t j = 0; j < c->n_hidden; j++)
            printf("-%zu", c->hidden[j]);
        printf("-%zu, T = %.6g, %zu parameters\n", c->dim, p[cnf_flow_T_index(flow, k)],
               cnf_net_num_params(net));
    }
    const double *mean = cnf_flow_mean_const(flow), *scale = cnf_flow_scale_const(flow);
    const double *L = cnf_flow_whitening_const(flow);
    printf("  preprocessing      %s, x_std = %s\n",
           cnf_preprocess_name(cnf_flow_preprocess_kind(flow)),
           L ? "L^-1 ((x - mean) / scale), L L^T = the correlation" : "(x - mean) / scale");
    printf("    mean  ");
    for (size_t i = 0; i < D && i < 8; i++)
        printf(" %.6g", mean[i]);
    printf(D > 8 ? " ...\n    scale " : "\n    scale ");
    for (size_t i = 0; i < D && i < 8; i++)
        printf(" %.6g", scale[i]);
    printf(D > 8 ? " ...\n" : "\n");
    if (L) {
        double lo = L[0], hi = L[0];
        for (size_t i = 1; i < D; i++) {
            lo = fmin(lo, L[i * D + i]);
            hi = fmax(hi, L[i * D + i]);
        }
        printf("    L diagonal %.6g to %.6g, log|det dx_std/dx| = %.6g\n", lo, hi,
               cnf_flow_preprocess_log_det(flow));
    }
    if (!ex.n_config && !ex.state) {
        printf("  training record    none\n");
    } else {
        printf("  training record\n");
        for (size_t i = 0; i < ex.n_config; i++)
            printf("    %-20s %s\n", ex.config_keys[i], ex.config_values[i]);
        if (ex.state) {
            const cnf_train_state *s = ex.state;
            printf("    state: iteration %zu, seed %lu, lr %g\n", s->iteration, s->seed, s->lr);
            if (s->has_best)
                printf("    best validation nll %.6f at iteration %zu; last %.6f\n",
                       s->best_val_nll, s->best_iteration, s->last_val_nll);
        }
    }
    cnf_flow_free(flow);
    cnf_model_extra_clear(&ex);
    return 0;
}
