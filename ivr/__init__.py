"""FastAGI IVR: the Mandarin menu (menu.toml), outage self-service before the
menu, account-number entry for withheld numbers, prompts generated with
pyttsx3/espeak-ng, and the outage registry behind it."""
