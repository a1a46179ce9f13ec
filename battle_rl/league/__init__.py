"""The league: the opponents a learner meets (``opponents``), playing either side of the map
(``sides``), ratings (``elo``) and tournaments between policies (``tournament``)."""
