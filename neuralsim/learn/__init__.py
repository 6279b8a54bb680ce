"""`neuralsim learn`: from a user's objects and a few labelled photos to a learned dataset and a detector judged
against domain randomisation, in one cached, resumable command."""
