// Models: whole-model gradients against finite differences, chunked prefill + decode against
// one full forward, checkpoint round trips, fla tensor names, bad configs and files.
#include "model/model.h"
#include "testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

// Tiny models covering every mixer and option path; initializer_range is large so gradients
// stand well above float32 noise in the finite differences.
static const char * const configs[] = {
    // GDN with a softmax layer (GQA + window), gate and conv on
    "{\"model_type\":\"gated_deltanet\",\"vocab_size\":37,\"hidden_size\":32,"
    "\"num_hidden_layers\":3,\"num_heads\":2,\"head_dim\":8,\"expand_v\":1.5,"
    "\"intermediate_size\":48,\"initializer_range\":0.25,\"norm_eps\":1e-5,"
    "\"attn\":{\"layers\":[1],\"num_heads\":4,\"num_kv_heads\":2,\"window_size\":7,"
    "\"qkv_bias\":true,\"rope_theta\":500}}",
    // GDN with grouped value heads, no gate, no conv, negative eigenvalues, tied embeddings
    "{\"model_type\":\"gated_deltanet\",\"vocab_size\":29,\"hidden_size\":24,"
    "\"num_hidden_layers\":2,\"num_heads\":1,\"num_v_heads\":2,\"head_dim\":8,\"expand_v\":1,"
    "\"use_gate\":false,\"use_short_conv\":false,\"allow_neg_eigval\":true,"
    "\"tie_word_embeddings\":true,\"intermediate_size\":40,\"initializer_range\":0.25}",
    // pure transformer
    "{\"model_type\":\"transformer\",\"vocab_size\":31,\"hidden_size\":32,"
    "\"num_hidden_layers\":2,\"num_heads\":4,\"num_kv_heads\":1,\"intermediate_size\":40,"
    "\"initializer_range\":0.25}",
};
#define NCFG (int)(sizeof configs / sizeof configs[0])

int main(void) {
    for (int i = 0; i < NCFG; i++) {
        la_model_grad_check(configs[i], i);
        la_model_decode_check(configs[i], i);
    }
    return la_test_summary();
}
