"""What a run leaves for people to look at: battle videos (``video``), plots (``plot``), the
terminal during training (``display``), sweep reports (``report``) and the loggers (``loggers``)."""
