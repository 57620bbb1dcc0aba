"""Read and write other tools' secret formats: Pulumi's passphrase stacks (``.pulumi``)."""
