// `train70b quantize`: a dense Hugging Face Llama checkpoint to a bitsandbytes 4-bit (NF4,
// double-quantized) one that transformers + bitsandbytes and train70b load as stored.
#pragma once

namespace train {

// The subcommand: parses argv (argv[0] is "quantize"), runs, returns the exit status;
// errors are one line on stderr.
int quantize_main(int argc, char** argv);

}  // namespace train
